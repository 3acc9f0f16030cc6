//! `OP_INSTANCE_STARTUP`, `OP_INSTANCE_REBOOT` and `OP_INSTANCE_SHUTDOWN`:
//! the instance's admin and operational state, both up or both down.

use serde_json::Value;

use super::unknown_instance;
use crate::model::SimState;

impl SimState {
    /// Starts (startup, reboot) or stops (shutdown) an instance.
    pub(crate) fn power(&mut self, name: &str, up: bool) -> Result<Value, Value> {
        let i = self
            .instances
            .get_mut(name)
            .ok_or_else(|| unknown_instance(name))?;
        i.admin_up = up;
        i.running = up;
        i.touch();
        Ok(Value::Null)
    }
}
