//! The built-in echo service and `torii demo`.
// TEMP stubs until the support branch lands.
pub async fn run_demo(_: std::net::SocketAddr, _: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    Err("not yet".into())
}
pub async fn run_echo(_: std::net::SocketAddr, _: Option<(std::path::PathBuf, std::path::PathBuf)>) -> Result<(), Box<dyn std::error::Error>> {
    Err("not yet".into())
}
