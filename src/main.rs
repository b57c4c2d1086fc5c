fn main() {
    println!("torii {}", env!("CARGO_PKG_VERSION"));
}
