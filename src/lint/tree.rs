//! YAML (and JSON, which YAML 1.2 reads too) as a tree in which every key
//! and value knows where it was written, so a finding can point at it.
//! Built from the same event parser the configuration loader uses.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

/// A place in a file; both numbers 1-based, as editors show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// A key of a mapping and where it was written.
#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub enum Value {
    /// Any scalar, as written (quotes removed); `quoted` when it was in
    /// quotes, so `"80"` and `80` can be told apart where it matters.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A value and where it starts.
#[derive(Debug, Clone)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// A syntax error: where, and what the parser said.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

static EMPTY: Vec<(Key, Node)> = Vec::new();
static EMPTY_SEQ: Vec<Node> = Vec::new();

impl Node {
    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key and value under `key` in a mapping.
    pub fn entry(&self, key: &str) -> Option<(&Key, &Node)> {
        self.entries()
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(k, v)| (k, v))
    }

    /// Where `key` is written in this mapping.
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entry(key).map(|(k, _)| k.pos)
    }

    /// Follows a path of keys.
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        let mut node = self;
        for key in path {
            node = node.get(key)?;
        }
        Some(node)
    }

    pub fn entries(&self) -> &[(Key, Node)] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &EMPTY,
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &EMPTY_SEQ,
        }
    }

    pub fn is_map(&self) -> bool {
        matches!(self.value, Value::Map(_))
    }

    /// A scalar's text.
    pub fn str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A scalar's text under `key`.
    pub fn str_at(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Node::str)
    }

    /// An unquoted integer (ports are numbers; `"8080"` in quotes is still
    /// read as one, the way Kubernetes does for most fields).
    pub fn int(&self) -> Option<i64> {
        self.str().and_then(|s| s.trim().parse().ok())
    }

    /// A scalar that is a string in quotes or not a number (a named port).
    pub fn is_quoted(&self) -> bool {
        matches!(self.value, Value::Scalar { quoted: true, .. })
    }
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        key: Option<Key>,
    },
}

/// Parses every document of `text`. A syntax error stops the parse: the
/// documents before it are of no use alone (a multi-document file is one
/// unit to its author), so the caller reports the error instead.
pub fn parse(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| SyntaxError {
            pos: Pos {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        })?;
        let pos = Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        let done = match event {
            Event::DocumentStart(..) => {
                root = None;
                anchors.clear();
                None
            }
            Event::DocumentEnd => {
                if let Some(doc) = root.take() {
                    docs.push(doc);
                }
                None
            }
            Event::Scalar(text, style, anchor, _) => {
                let node = Node {
                    pos,
                    value: Value::Scalar {
                        text: text.into_owned(),
                        quoted: !matches!(style, ScalarStyle::Plain),
                    },
                };
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                Some(node)
            }
            Event::Alias(id) => Some(match anchors.get(&id) {
                // The anchored value, pointing where the alias is written.
                Some(node) => Node {
                    pos,
                    value: node.value.clone(),
                },
                None => Node {
                    pos,
                    value: Value::Scalar {
                        text: String::new(),
                        quoted: false,
                    },
                },
            }),
            Event::SequenceStart(_, anchor, _) => {
                stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(_, anchor, _) => {
                stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match stack.pop() {
                    Some(Frame::Seq { pos, anchor, items }) => (
                        Node {
                            pos,
                            value: Value::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        pos,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            pos,
                            value: Value::Map(entries),
                        },
                        anchor,
                    ),
                    None => continue,
                };
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                Some(node)
            }
            _ => None,
        };
        let Some(node) = done else { continue };
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => {
                    // A key: a scalar's text (a collection as a key is kept
                    // under an empty name; nothing looked for is like that).
                    let name = node.str().unwrap_or_default().to_string();
                    *key = Some(Key {
                        name,
                        pos: node.pos,
                    });
                }
            },
        }
    }
    // Merge keys (`<<: *base`) are left as written: the configs linted here
    // rarely use them, and a finding inside one still points somewhere real.
    Ok(docs
        .into_iter()
        .filter(|d| {
            !matches!(&d.value, Value::Scalar { text, quoted: false } if matches!(text.as_str(), "" | "~" | "null"))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }

    #[test]
    fn positions_of_keys_and_values() {
        let docs = parse("a:\n  b: [1, \"x\"]\n---\nkind: Service\n").unwrap();
        assert_eq!(docs.len(), 2);
        let b = docs[0].get("a").unwrap();
        assert_eq!(b.key_pos("b"), Some(p(2, 3)));
        let items = b.get("b").unwrap().items();
        assert_eq!(items[1].pos, p(2, 10));
        assert!(items[1].is_quoted());
        assert_eq!(docs[1].str_at("kind"), Some("Service"));
    }

    #[test]
    fn json_with_tabs() {
        let docs = parse("{\n\t\"a\": {\n\t\t\"b\": 1\n\t}\n}\n").unwrap();
        assert_eq!(docs[0].at(&["a", "b"]).unwrap().int(), Some(1));
        assert_eq!(docs[0].get("a").unwrap().key_pos("b"), Some(p(3, 3)));
    }

    #[test]
    fn aliases_resolve() {
        let docs = parse("x: &a {k: 1}\ny: *a\n").unwrap();
        assert_eq!(docs[0].at(&["y", "k"]).unwrap().int(), Some(1));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: c\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
        let e = parse("a: b\n c: d\n").unwrap_err();
        assert_eq!(e.pos.line, 2, "{e:?}");
    }

    #[test]
    fn empty_documents_are_dropped() {
        assert_eq!(parse("---\n---\na: 1\n").unwrap().len(), 1);
        assert!(parse("").unwrap().is_empty());
    }
}
