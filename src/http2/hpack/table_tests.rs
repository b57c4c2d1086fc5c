//! Tests of `table.rs`.
use super::*;

#[test]
fn static_table_matches_http_names() {
    for (i, entry) in STATIC.iter().enumerate() {
        assert_eq!(
            entry.name.as_bytes(),
            entry.name_str.as_bytes(),
            "index {}",
            i + 1
        );
    }
    assert_eq!(STATIC[15].value, "gzip, deflate");
    assert_eq!(STATIC[60].name_str, "www-authenticate");
}

#[test]
fn static_name_lookup_finds_every_regular_name() {
    for (i, entry) in STATIC.iter().enumerate().skip(14) {
        assert_eq!(static_name_index(entry.name_str.as_bytes()), Some(i + 1));
        let mut other = entry.name_str.as_bytes().to_vec();
        other[1] ^= 0x20;
        assert_eq!(static_name_index(&other), None);
    }
    for miss in [
        "",
        "te",
        "grpc-status",
        "x-request-id",
        "content-typf",
        "accept-ranged",
    ] {
        assert_eq!(static_name_index(miss.as_bytes()), None, "{miss}");
    }
}

#[test]
fn static_exact_lookup() {
    assert_eq!(static_exact(idx::METHOD, b"GET"), Some(2));
    assert_eq!(static_exact(idx::METHOD, b"POST"), Some(3));
    assert_eq!(static_exact(idx::METHOD, b"PUT"), None);
    assert_eq!(static_exact(idx::STATUS, b"500"), Some(14));
    assert_eq!(static_exact(idx::STATUS, b"201"), None);
    assert_eq!(static_exact(idx::PATH, b"/index.html"), Some(5));
    assert_eq!(static_exact(16, b"gzip, deflate"), Some(16));
    assert_eq!(static_exact(16, b"gzip"), None);
    assert_eq!(static_exact(19, b""), Some(19));
    assert_eq!(static_exact(61, b""), Some(61));
}

fn hashes(name: &str, value: &str) -> (u32, u32) {
    let n = hash_bytes(0, name.as_bytes());
    (finish(n), finish(hash_bytes(n, value.as_bytes())))
}

fn insert(t: &mut EncTable, name: &'static str, value: &'static str) {
    let (nh, fh) = hashes(name, value);
    t.insert(
        EncName::Header(HeaderName::from_static(name)),
        EncValue::Header(HeaderValue::from_static(value)),
        nh,
        fh,
    );
}

fn find(t: &EncTable, name: &str, value: &str) -> Option<usize> {
    let (_, fh) = hashes(name, value);
    let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
    t.find_field(NameRef::Header(&name), value.as_bytes(), fh)
}

fn find_name(t: &EncTable, name: &str) -> Option<usize> {
    let hash = hashes(name, "").0;
    let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
    t.find_name(NameRef::Header(&name), hash)
}

#[test]
fn short_equality() {
    let long = b"0123456789abcdefghijklmnopqrstuvwxyz-0123456789";
    for n in 0..long.len() {
        let a = &long[..n];
        assert!(eq_bytes(a, a));
        for i in 0..n {
            let mut b = a.to_vec();
            b[i] ^= 1;
            assert!(!eq_bytes(a, &b), "{n} {i}");
        }
        assert!(!eq_bytes(a, &long[..n + 1]));
    }
}

#[test]
fn encoder_table_finds_and_evicts() {
    let mut t = EncTable::new(200);
    insert(&mut t, "a", "1"); // 34 bytes
    insert(&mut t, "b", "2");
    insert(&mut t, "a", "3");
    assert_eq!(find(&t, "a", "3"), Some(62));
    assert_eq!(find(&t, "b", "2"), Some(63));
    assert_eq!(find(&t, "a", "1"), Some(64));
    assert_eq!(find(&t, "a", "2"), None);
    assert_eq!(find_name(&t, "a"), Some(62));
    assert_eq!(find_name(&t, "b"), Some(63));
    assert_eq!(find_name(&t, "c"), None);
    // 5 entries fit in 200 bytes; the sixth evicts the oldest.
    insert(&mut t, "c", "4");
    insert(&mut t, "d", "5");
    insert(&mut t, "e", "6");
    assert_eq!(t.len(), 5);
    assert_eq!(find(&t, "a", "1"), None);
    assert_eq!(find_name(&t, "a"), Some(65));
    insert(&mut t, "f", "7");
    insert(&mut t, "g", "8");
    assert_eq!(find(&t, "a", "3"), None);
    assert_eq!(find_name(&t, "a"), None);
    assert_eq!(find(&t, "g", "8"), Some(62));
    assert_eq!(find(&t, "c", "4"), Some(66));
    t.set_max_size(70);
    assert_eq!(t.len(), 2);
    assert_eq!(t.size(), 68);
    assert_eq!(find(&t, "c", "4"), None);
    assert_eq!(find(&t, "f", "7"), Some(63));
    t.set_max_size(0);
    assert_eq!(t.len(), 0);
    assert_eq!(find(&t, "g", "8"), None);
    assert_eq!(find_name(&t, "g"), None);
}

#[test]
fn encoder_table_survives_many_insertions() {
    // Thousands of distinct entries through a 4096-byte table: every live one is found at
    // its index, every evicted one is gone, and the maps do not fill up.
    let names: Vec<&'static str> = (0..50)
        .map(|i| &*Box::leak(format!("x-name-{i}").into_boxed_str()))
        .collect();
    let values: Vec<&'static str> = (0..5000)
        .map(|i| &*Box::leak(format!("value-{i}").into_boxed_str()))
        .collect();
    let mut t = EncTable::new(4096);
    for (i, value) in values.iter().enumerate() {
        insert(&mut t, names[i % names.len()], value);
        let live = t.len();
        for back in 0..live {
            let j = i - back;
            assert_eq!(find(&t, names[j % names.len()], values[j]), Some(62 + back));
        }
        if i >= live {
            let gone = i - live;
            assert_eq!(find(&t, names[gone % names.len()], values[gone]), None);
        }
        assert_eq!(find_name(&t, names[i % names.len()]), Some(62));
    }
}
