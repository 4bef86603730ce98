use crate::Result; pub fn run(_a: &[String]) -> Result { Ok(()) }
