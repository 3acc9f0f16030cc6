//! `OP_INSTANCE_REMOVE` (`DELETE /2/instances/NAME`).

use serde_json::Value;

use super::unknown_instance;
use crate::model::SimState;

impl SimState {
    /// Removes an instance from the cluster.
    pub(crate) fn remove(&mut self, name: &str) -> Result<Value, Value> {
        self.instances
            .remove(name)
            .ok_or_else(|| unknown_instance(name))?;
        Ok(Value::Null)
    }
}
