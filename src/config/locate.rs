//! Where things are in the file: a `path → (line, column)` index built from
//! the YAML event stream, so any problem found after deserialization can
//! point at the key or the value it is about.
//!
//! Paths are written the way messages show them: `listeners[0].routes[2].cluster`.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser};

/// A place in the file; both numbers 1-based, as editors show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };
}

#[derive(Debug, Clone, Copy)]
struct Node {
    /// Where the key is, for values inside a mapping.
    key: Option<Pos>,
    /// Where the value starts (for a mapping or list: its first token).
    value: Pos,
}

/// Positions of every key and value in the document.
#[derive(Debug, Default)]
pub struct Index {
    nodes: HashMap<String, Node>,
}

/// Whether a problem is about a key (an unknown key) or its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Key,
    Value,
}

enum Frame {
    Map {
        path: String,
        key: Option<(String, Pos)>,
        is_key: bool,
    },
    Seq {
        path: String,
        next: usize,
        is_key: bool,
    },
}

impl Index {
    /// Index as much of `text` as parses; a syntax error just ends the index
    /// (the deserializer reports the error itself, with its position).
    pub fn build(text: &str) -> Index {
        let mut index = Index::default();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let pos = Pos {
                line: span.start.line(),
                column: span.start.col() + 1,
            };
            match event {
                Event::Scalar(value, ..) => index.node(&mut stack, pos, Some(&value), None),
                Event::Alias(..) => index.node(&mut stack, pos, Some("*"), None),
                Event::MappingStart(..) => index.node(&mut stack, pos, None, Some(true)),
                Event::SequenceStart(..) => index.node(&mut stack, pos, None, Some(false)),
                Event::MappingEnd | Event::SequenceEnd => Self::close(&mut stack),
                _ => {}
            }
        }
        index
    }

    /// A node starts: a scalar (`scalar` is its text) or a collection
    /// (`opens` says whether a mapping or a list).
    fn node(
        &mut self,
        stack: &mut Vec<Frame>,
        pos: Pos,
        scalar: Option<&str>,
        opens: Option<bool>,
    ) {
        let mut is_key = false;
        let path = match stack.last_mut() {
            None => String::new(),
            Some(Frame::Seq { path, next, .. }) => {
                *next += 1;
                format!("{path}[{}]", *next - 1)
            }
            Some(Frame::Map {
                key: key @ None, ..
            }) => match scalar {
                Some(text) => {
                    *key = Some((text.to_string(), pos));
                    return;
                }
                // A mapping or list used as a key: nothing of ours looks
                // like that; index it nowhere and name the key "?".
                None => {
                    is_key = true;
                    String::from("\u{0}")
                }
            },
            Some(Frame::Map { path, key, .. }) => {
                let (name, key_pos) = key.take().expect("a pending key");
                let child = join(path, &name);
                self.nodes.insert(
                    child.clone(),
                    Node {
                        key: Some(key_pos),
                        value: pos,
                    },
                );
                child
            }
        };
        // The root and list items have no key; mapping values were indexed above.
        if path.is_empty() || (!is_key && path.ends_with(']')) {
            let node = Node {
                key: None,
                value: pos,
            };
            self.nodes.insert(path.clone(), node);
        }
        match opens {
            Some(true) => stack.push(Frame::Map {
                path,
                key: None,
                is_key,
            }),
            Some(false) => stack.push(Frame::Seq {
                path,
                next: 0,
                is_key,
            }),
            None => {}
        }
    }

    fn close(stack: &mut Vec<Frame>) {
        let was_key = match stack.pop() {
            Some(Frame::Map { is_key, .. } | Frame::Seq { is_key, .. }) => is_key,
            None => false,
        };
        if was_key {
            if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                *key = Some(("?".to_string(), Pos::START));
            }
        }
    }

    /// Where to point for `path`. A path that is not in the file (a missing
    /// key) points at the closest enclosing thing that is.
    pub fn find(&self, path: &str, target: Target) -> Pos {
        let mut current = path;
        loop {
            if let Some(node) = self.nodes.get(current) {
                return match (target, current == path) {
                    (Target::Value, true) => node.value,
                    _ => node.key.unwrap_or(node.value),
                };
            }
            match parent(current) {
                Some(p) => current = p,
                None => return Pos::START,
            }
        }
    }

    /// Whether the file has this path at all.
    #[cfg(test)]
    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    /// The path of the value that starts at `pos`, preferring the deepest.
    pub fn path_at(&self, pos: Pos) -> Option<&str> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.value == pos)
            .map(|(path, _)| path.as_str())
            .max_by_key(|path| path.len())
    }
}

/// `a` + `.b` (or just `b` at the top).
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        return key.to_string();
    }
    // Not format!: a config of 10,000 routes joins ~150,000 paths, and
    // the formatting machinery costs ten times these copies.
    let mut joined = String::with_capacity(path.len() + 1 + key.len());
    joined.push_str(path);
    joined.push('.');
    joined.push_str(key);
    joined
}

/// The enclosing path: `a.b[2]` → `a.b` → `a` → `` → none.
pub fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        if let Some(i) = path.rfind('[') {
            return Some(&path[..i]);
        }
    }
    Some(path.rfind('.').map_or("", |i| &path[..i]))
}

/// The path with sequence indices dropped: `listeners[0].tls` → `listeners[].tls`.
pub fn shape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listeners:
  - name: edge
    address: 0.0.0.0:8443
    routes:
      - match: { prefix: / }
        cluster: hello
clusters:
  - name: hello
    endpoints: [app:9090, \"10.0.0.2:9090\"]
";

    fn at(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }

    #[test]
    fn finds_keys_and_values() {
        let index = Index::build(DOC);
        let addr = "listeners[0].address";
        assert_eq!(index.find(addr, Target::Key), at(3, 5));
        assert_eq!(index.find(addr, Target::Value), at(3, 14));
        let cluster = "listeners[0].routes[0].cluster";
        assert_eq!(index.find(cluster, Target::Value), at(6, 18));
        let prefix = "listeners[0].routes[0].match.prefix";
        assert_eq!(index.find(prefix, Target::Key), at(5, 18));
        assert_eq!(index.find(prefix, Target::Value), at(5, 26));
        let endpoint = "clusters[0].endpoints[1]";
        assert_eq!(index.find(endpoint, Target::Value), at(9, 27));
        assert_eq!(index.find("listeners[0]", Target::Value), at(2, 5));
    }

    #[test]
    fn missing_paths_point_at_the_closest_parent_key() {
        let index = Index::build(DOC);
        let tls = "listeners[0].routes[0].match.regex";
        assert_eq!(index.find(tls, Target::Value), at(5, 9));
        assert_eq!(index.find("listeners[0].tls", Target::Value), at(2, 5));
        assert_eq!(index.find("admin", Target::Value), at(1, 1));
    }

    #[test]
    fn reverse_lookup() {
        let index = Index::build(DOC);
        assert_eq!(
            index.path_at(at(6, 18)),
            Some("listeners[0].routes[0].cluster")
        );
    }

    #[test]
    fn paths() {
        assert_eq!(parent("a.b[2]"), Some("a.b"));
        assert_eq!(parent("a.b"), Some("a"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
        assert_eq!(
            shape("listeners[10].routes[2].match"),
            "listeners[].routes[].match"
        );
    }

    #[test]
    fn a_syntax_error_keeps_what_came_before() {
        let index = Index::build("admin:\n  address: x\nlisteners: [\n");
        assert!(index.contains("admin.address"));
    }
}
