//! A byte-span index over a JSON document that has already been validated as
//! strict JSON.
//!
//! The installer never re-serializes a configuration file. It locates the
//! exact bytes of the `command` and `args` values it needs to change and
//! splices new text in, so every other byte (formatting, escapes, number
//! spelling, unknown fields, key order) survives untouched. That is also what
//! makes `install` followed by `uninstall` byte-identical.

/// One JSON value and where it sits in the text (`start..end`, byte offsets).
#[derive(Debug)]
pub(crate) struct Node {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Object(Vec<Member>),
    Array(Vec<Node>),
    String,
    /// Number, `true`, `false` or `null`.
    Scalar,
}

/// An object member: the key's span (including its quotes), the decoded key,
/// and the value.
#[derive(Debug)]
pub(crate) struct Member {
    pub key: String,
    pub key_start: usize,
    pub key_end: usize,
    pub value: Node,
}

/// Result of looking a key up in an object's members.
pub(crate) enum Lookup<'a> {
    Missing,
    One(&'a Member),
    /// The key occurs more than once; editors disagree on which one wins, so
    /// the installer refuses to guess.
    Duplicate,
}

pub(crate) fn lookup<'a>(members: &'a [Member], key: &str) -> Lookup<'a> {
    let mut found = None;
    for m in members.iter().filter(|m| m.key == key) {
        if found.is_some() {
            return Lookup::Duplicate;
        }
        found = Some(m);
    }
    match found {
        Some(m) => Lookup::One(m),
        None => Lookup::Missing,
    }
}

impl Node {
    pub fn text<'t>(&self, doc: &'t str) -> &'t str {
        &doc[self.start..self.end]
    }

    /// The decoded value if this is a JSON string.
    pub fn as_str(&self, doc: &str) -> Option<String> {
        match self.kind {
            Kind::String => serde_json::from_str::<String>(self.text(doc)).ok(),
            _ => None,
        }
    }

    /// Decoded strings if this is an array whose items are all strings.
    pub fn as_str_array(&self, doc: &str) -> Option<Vec<String>> {
        match &self.kind {
            Kind::Array(items) => items.iter().map(|n| n.as_str(doc)).collect(),
            _ => None,
        }
    }
}

/// Index `doc[from..]`, which must hold exactly one JSON value (plus
/// surrounding whitespace). Returns the byte offset of the problem on failure;
/// callers validate with serde_json first, so a failure here is a bug.
pub(crate) fn index(doc: &str, from: usize) -> Result<Node, usize> {
    let mut s = Scanner {
        doc,
        b: doc.as_bytes(),
        pos: from,
    };
    s.ws();
    let node = s.value()?;
    s.ws();
    if s.pos != s.b.len() {
        return Err(s.pos);
    }
    Ok(node)
}

struct Scanner<'a> {
    doc: &'a str,
    b: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), usize> {
        if self.b.get(self.pos) == Some(&byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.pos)
        }
    }

    fn value(&mut self) -> Result<Node, usize> {
        let start = self.pos;
        match self.b.get(self.pos) {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => {
                self.string()?;
                Ok(Node {
                    start,
                    end: self.pos,
                    kind: Kind::String,
                })
            }
            Some(_) => {
                while let Some(c) = self.b.get(self.pos) {
                    if matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err(start);
                }
                Ok(Node {
                    start,
                    end: self.pos,
                    kind: Kind::Scalar,
                })
            }
            None => Err(start),
        }
    }

    fn string(&mut self) -> Result<(), usize> {
        let start = self.pos;
        self.expect(b'"')?;
        loop {
            match self.b.get(self.pos) {
                Some(b'\\') => self.pos += 2,
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => self.pos += 1,
                None => return Err(start),
            }
        }
    }

    fn object(&mut self) -> Result<Node, usize> {
        let start = self.pos;
        self.expect(b'{')?;
        let mut members = Vec::new();
        self.ws();
        if self.b.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(Node {
                start,
                end: self.pos,
                kind: Kind::Object(members),
            });
        }
        loop {
            self.ws();
            let key_start = self.pos;
            self.string()?;
            let key_end = self.pos;
            let key = self
                .doc
                .get(key_start..key_end)
                .and_then(|raw| serde_json::from_str::<String>(raw).ok())
                .ok_or(key_start)?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            let value = self.value()?;
            members.push(Member {
                key,
                key_start,
                key_end,
                value,
            });
            self.ws();
            match self.b.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Node {
                        start,
                        end: self.pos,
                        kind: Kind::Object(members),
                    });
                }
                _ => return Err(self.pos),
            }
        }
    }

    fn array(&mut self) -> Result<Node, usize> {
        let start = self.pos;
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.ws();
        if self.b.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(Node {
                start,
                end: self.pos,
                kind: Kind::Array(items),
            });
        }
        loop {
            self.ws();
            items.push(self.value()?);
            self.ws();
            match self.b.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Node {
                        start,
                        end: self.pos,
                        kind: Kind::Array(items),
                    });
                }
                _ => return Err(self.pos),
            }
        }
    }
}
