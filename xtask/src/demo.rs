use crate::Result; pub fn run() -> Result { Ok(()) }
