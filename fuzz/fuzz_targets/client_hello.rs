//! The protocol sniffer on arbitrary first bytes: ClientHello parsing (SNI,
//! ALPN, records), HTTP/1.x and HTTP/2 detection, giving up. It must never
//! panic, and its answers must hold the invariants `fuzz_one` asserts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    torii::listener::detect::fuzz_one(data);
});
