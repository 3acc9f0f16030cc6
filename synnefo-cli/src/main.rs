//! The `synnefo` command.
fn main() {}
