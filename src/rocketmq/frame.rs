//! RocketMQ remoting frames: encoding, decoding and the lenient (fastjson-style) JSON RocketMQ
//! servers write.
//!
//! A frame (Apache RocketMQ `RemotingCommand.encode`/`decode`, in
//! `remoting/src/main/java/org/apache/rocketmq/remoting/protocol/RemotingCommand.java`) is:
//!
//! ```text
//! | total length: u32 BE | serialize type (1 byte) + header length (3 bytes) | header | body |
//! ```
//!
//! `total length` counts everything after itself. The serialization type is `0` for JSON and `1`
//! for RocketMQ's binary header (`SerializeType.java`); this client speaks and accepts JSON only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest frame accepted (Apache RocketMQ's default `com.rocketmq.remoting.frameMaxLength`,
/// 16 MiB).
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// `SerializeType.JSON` (`SerializeType.java`).
pub const SERIALIZE_JSON: u8 = 0;

/// Bit 0 of `flag`: set on responses (`RemotingCommand.RPC_TYPE`).
pub const FLAG_RESPONSE: i32 = 1;
/// Bit 1 of `flag`: set on one-way requests (`RemotingCommand.RPC_ONEWAY`).
pub const FLAG_ONEWAY: i32 = 1 << 1;

/// `language` of our requests. `LanguageCode.java` (Apache RocketMQ) knows JAVA, CPP, DOTNET,
/// PYTHON, DELPHI, ERLANG, RUBY, OTHER, HTTP, GO, PHP, OMS; a Java server rejects other names.
pub const LANGUAGE: &str = "OTHER";

/// A frame that cannot be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length fields are impossible (too small, too large, or the header overruns the frame).
    #[error("bad frame length: {0}")]
    Length(String),
    /// The header is not JSON (e.g. RocketMQ's binary `ROCKETMQ` serialization, type 1).
    #[error("unsupported header serialization type {0} (only 0 = JSON is spoken)")]
    SerializeType(u8),
    /// The header is not a valid RocketMQ JSON header.
    #[error("bad header: {0}")]
    Header(String),
    /// The stream ended inside a frame.
    #[error("truncated frame: {got} of {need} bytes")]
    Truncated {
        /// Bytes present.
        got: usize,
        /// Bytes the length prefix announced (including the prefix).
        need: usize,
    },
}

/// One request or response (Apache RocketMQ `RemotingCommand`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Request code (`RequestCode.java`) or response code (`ResponseCode.java`).
    pub code: i32,
    /// Sender's language (`LanguageCode`); informational.
    pub language: String,
    /// Sender's version; informational.
    pub version: i32,
    /// Correlates a response with its request.
    pub opaque: i32,
    /// [`FLAG_RESPONSE`], [`FLAG_ONEWAY`].
    pub flag: i32,
    /// Human-readable text of a response (errors), if any.
    pub remark: Option<String>,
    /// The request/response header fields (`*RequestHeader.java` fields, as strings).
    pub ext_fields: BTreeMap<String, String>,
    /// The body (JSON for the admin calls), possibly empty.
    pub body: Vec<u8>,
}

impl Command {
    /// A request with `code` and no header fields; the opaque is set when sent.
    pub fn new(code: i32) -> Command {
        Command {
            code,
            language: LANGUAGE.to_string(),
            version: 0,
            opaque: 0,
            flag: 0,
            remark: None,
            ext_fields: BTreeMap::new(),
            body: Vec::new(),
        }
    }

    /// A request with `code` and header fields `ext_fields`; the opaque is set when sent.
    pub fn request<K, V>(code: i32, ext_fields: impl IntoIterator<Item = (K, V)>) -> Command
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut command = Command::new(code);
        command.ext_fields = ext_fields
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        command
    }

    /// The same command with `body`.
    pub fn with_body(mut self, body: Vec<u8>) -> Command {
        self.body = body;
        self
    }

    /// Whether this is a response (not a request the server sends us).
    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// The remark, or `""`.
    pub fn remark(&self) -> &str {
        self.remark.as_deref().unwrap_or("")
    }

    /// Encodes the whole frame, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let header = WireHeader {
            code: self.code,
            language: &self.language,
            version: self.version,
            opaque: self.opaque,
            flag: self.flag,
            remark: self.remark.as_deref(),
            ext_fields: &self.ext_fields,
            // Without this field rocketmq-rust 1.0.0 closes the connection without an answer.
            serialize_type_current_rpc: "JSON",
        };
        let header = serde_json::to_vec(&header).expect("a header always serializes");
        let total = 4 + header.len() + self.body.len();
        let mut out = Vec::with_capacity(4 + total);
        out.extend_from_slice(&(total as u32).to_be_bytes());
        out.extend_from_slice(
            &((header.len() as u32) | (u32::from(SERIALIZE_JSON) << 24)).to_be_bytes(),
        );
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.body);
        out
    }

    /// Decodes one frame from the start of `buf`: `Ok(None)` when `buf` does not hold a whole
    /// frame yet, else the command and the number of bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(Command, usize)>, FrameError> {
        let Some(total) = frame_len(buf)? else {
            return Ok(None);
        };
        if buf.len() < 4 + total {
            return Ok(None);
        }
        let command = Command::decode_payload(&buf[4..4 + total])?;
        Ok(Some((command, 4 + total)))
    }

    /// The whole length (prefix included) of the frame starting `buf`, checked as soon as its
    /// first 8 bytes are there (length, serialization type, header length), so a reader knows
    /// what it is about to buffer and refuses garbage before buffering it. `None` with fewer than
    /// 8 bytes.
    pub fn announced_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let Some(total) = frame_len(buf)? else {
            return Ok(None);
        };
        let mark = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let serialize_type = (mark >> 24) as u8;
        let header_len = (mark & 0x00ff_ffff) as usize;
        if serialize_type != SERIALIZE_JSON {
            return Err(FrameError::SerializeType(serialize_type));
        }
        if 4 + header_len > total {
            return Err(FrameError::Length(format!(
                "header of {header_len} bytes in a frame of {total}"
            )));
        }
        Ok(Some(4 + total))
    }

    /// Decodes exactly one whole frame: a buffer that ends early is [`FrameError::Truncated`].
    pub fn decode_exact(buf: &[u8]) -> Result<Command, FrameError> {
        match Command::decode(buf)? {
            Some((command, used)) if used == buf.len() => Ok(command),
            Some((_, used)) => Err(FrameError::Length(format!(
                "{} bytes after a {used}-byte frame",
                buf.len() - used
            ))),
            None => Err(FrameError::Truncated {
                got: buf.len(),
                need: frame_len(buf)?.map_or(4, |t| t + 4),
            }),
        }
    }

    /// Decodes what follows the length prefix.
    pub fn decode_payload(payload: &[u8]) -> Result<Command, FrameError> {
        if payload.len() < 4 {
            return Err(FrameError::Length(format!(
                "{} bytes cannot hold a header length",
                payload.len()
            )));
        }
        let mark = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
        let serialize_type = (mark >> 24) as u8;
        let header_len = (mark & 0x00ff_ffff) as usize;
        if serialize_type != SERIALIZE_JSON {
            return Err(FrameError::SerializeType(serialize_type));
        }
        if 4 + header_len > payload.len() {
            return Err(FrameError::Length(format!(
                "header of {header_len} bytes in a frame of {}",
                payload.len()
            )));
        }
        let text = std::str::from_utf8(&payload[4..4 + header_len])
            .map_err(|e| FrameError::Header(e.to_string()))?;
        let value = parse_lenient(text).map_err(FrameError::Header)?;
        let header: ReadHeader =
            serde_json::from_value(value).map_err(|e| FrameError::Header(e.to_string()))?;
        let ext_fields = match header.ext_fields {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect(),
            Some(other) => {
                return Err(FrameError::Header(format!(
                    "extFields is not an object: {other}"
                )));
            }
        };
        Ok(Command {
            code: header.code,
            language: header.language.unwrap_or_default(),
            version: header.version.unwrap_or_default(),
            opaque: header.opaque,
            flag: header.flag.unwrap_or_default(),
            remark: header.remark,
            ext_fields,
            body: payload[4 + header_len..].to_vec(),
        })
    }
}

/// The frame's announced length (after the prefix), checked; `None` with fewer than 4 bytes.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let total = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if total < 4 {
        return Err(FrameError::Length(format!("total length {total} < 4")));
    }
    if total > MAX_FRAME_LEN {
        return Err(FrameError::Length(format!(
            "total length {total} > {MAX_FRAME_LEN}"
        )));
    }
    Ok(Some(total))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireHeader<'a> {
    code: i32,
    language: &'a str,
    version: i32,
    opaque: i32,
    flag: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    remark: Option<&'a str>,
    ext_fields: &'a BTreeMap<String, String>,
    #[serde(rename = "serializeTypeCurrentRPC")]
    serialize_type_current_rpc: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadHeader {
    code: i32,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    version: Option<i32>,
    opaque: i32,
    #[serde(default)]
    flag: Option<i32>,
    #[serde(default)]
    remark: Option<String>,
    #[serde(default)]
    ext_fields: Option<Value>,
}

/// Parses JSON as fastjson writes it: standard JSON, plus object keys that are not strings
/// (`{0:"127.0.0.1:10911"}`, or `{{"topic":"t","brokerName":"b","queueId":0}:{...}}` for a
/// `Map<MessageQueue, _>`). A key that is not a string becomes the compact JSON text of its value
/// (`"0"`, `"{\"brokerName\":\"b\",\"queueId\":0,\"topic\":\"t\"}"`), so that it can be parsed
/// again with [`parse_lenient`].
pub fn parse_lenient(text: &str) -> Result<Value, String> {
    let mut parser = Lenient {
        bytes: text.as_bytes(),
        text,
        pos: 0,
    };
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("trailing characters"));
    }
    Ok(value)
}

/// Nesting limit of [`parse_lenient`] (a hostile body must not overflow the stack).
const MAX_DEPTH: usize = 128;

struct Lenient<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl Lenient<'_> {
    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.pos)
    }

    fn skip_ws(&mut self) {
        while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.bytes.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", byte as char)))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(_) => Err(self.error("unexpected character")),
            None => Err(self.error("unexpected end")),
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, String> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("unknown literal"))
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, String> {
        self.expect(b'{')?;
        let mut map = Map::new();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            let key = match self.value(depth + 1)? {
                Value::String(s) => s,
                other => other.to_string(),
            };
            self.expect(b':')?;
            let value = self.value(depth + 1)?;
            map.insert(key, value);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.pos;
        while self.pos < self.bytes.len()
            && matches!(
                self.bytes[self.pos],
                b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
            )
        {
            self.pos += 1;
        }
        serde_json::from_str::<serde_json::Number>(&self.text[start..self.pos])
            .map(Value::Number)
            .map_err(|e| format!("bad number at byte {start}: {e}"))
    }

    /// A JSON string (standard escapes, `\u` with surrogate pairs).
    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while self.pos < self.bytes.len() && !matches!(self.bytes[self.pos], b'"' | b'\\') {
                self.pos += 1;
            }
            out.push_str(&self.text[start..self.pos]);
            match self.bytes.get(self.pos) {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(_) => {
                    self.pos += 1;
                    let escape = *self
                        .bytes
                        .get(self.pos)
                        .ok_or_else(|| self.error("unterminated escape"))?;
                    self.pos += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let first = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&first)
                                && self.bytes[self.pos..].starts_with(b"\\u")
                            {
                                self.pos += 2;
                                let second = self.hex4()?;
                                0x10000
                                    + ((first - 0xd800) << 10)
                                    + (second.wrapping_sub(0xdc00) & 0x3ff)
                            } else {
                                first
                            };
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        _ => return Err(self.error("bad escape")),
                    }
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("short \\u escape"))?;
        let code = u32::from_str_radix(digits, 16).map_err(|_| self.error("bad \\u escape"))?;
        self.pos += 4;
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Command {
        Command::request(105, [("topic", "orders")]).with_body(b"{\"x\":1}".to_vec())
    }

    #[test]
    fn encodes_the_documented_layout() {
        let mut command = sample();
        command.opaque = 7;
        let bytes = command.encode();
        let total = u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize;
        assert_eq!(total, bytes.len() - 4);
        let mark = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
        assert_eq!(mark >> 24, 0, "serialization type JSON");
        let header_len = (mark & 0xff_ffff) as usize;
        let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
        assert_eq!(
            header,
            json!({"code": 105, "language": "OTHER", "version": 0, "opaque": 7, "flag": 0,
                   "extFields": {"topic": "orders"}, "serializeTypeCurrentRPC": "JSON"})
        );
        assert_eq!(&bytes[8 + header_len..], b"{\"x\":1}");
    }

    #[test]
    fn round_trip() {
        let mut command = sample();
        command.opaque = 42;
        command.flag = FLAG_RESPONSE;
        command.remark = Some("ok \u{e9} \"quoted\"".into());
        let bytes = command.encode();
        assert_eq!(Command::decode_exact(&bytes).unwrap(), command);
        // Two frames back to back, then a partial one.
        let mut stream = bytes.clone();
        stream.extend_from_slice(&bytes);
        stream.extend_from_slice(&bytes[..5]);
        let (first, used) = Command::decode(&stream).unwrap().unwrap();
        assert_eq!((first, used), (command.clone(), bytes.len()));
        let (second, used2) = Command::decode(&stream[used..]).unwrap().unwrap();
        assert_eq!((second, used2), (command, bytes.len()));
        assert_eq!(Command::decode(&stream[used + used2..]).unwrap(), None);
    }

    #[test]
    fn truncated_frames() {
        let bytes = sample().encode();
        for cut in [0, 3, 4, 8, bytes.len() - 1] {
            assert_eq!(
                Command::decode(&bytes[..cut]).unwrap(),
                None,
                "cut at {cut}"
            );
            assert!(
                matches!(
                    Command::decode_exact(&bytes[..cut]),
                    Err(FrameError::Truncated { got, .. }) if got == cut
                ),
                "cut at {cut}"
            );
        }
        // A header length that runs past the frame is an error, not a wait.
        let mut bad = bytes.clone();
        bad[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(Command::decode(&bad), Err(FrameError::Length(_))));
    }

    #[test]
    fn non_json_serialization_type_is_an_error() {
        let mut bytes = sample().encode();
        bytes[4] = 1; // ROCKETMQ binary header
        assert_eq!(Command::decode(&bytes), Err(FrameError::SerializeType(1)));
    }

    #[test]
    fn impossible_lengths() {
        assert!(matches!(
            Command::decode(&[0, 0, 0, 2, 0, 0]),
            Err(FrameError::Length(_))
        ));
        assert!(matches!(
            Command::decode(&[0x7f, 0, 0, 0]),
            Err(FrameError::Length(_))
        ));
    }

    #[test]
    fn decodes_a_real_rocketmq_rust_response_header() {
        let header = br#"{"code":17,"language":"RUST","version":474,"opaque":101,"flag":1,"remark":"Topic route was not found","extFields":null,"serializeTypeCurrentRPC":"JSON"}"#;
        let mut frame = Vec::new();
        frame.extend_from_slice(&((4 + header.len()) as u32).to_be_bytes());
        frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
        frame.extend_from_slice(header);
        let command = Command::decode_exact(&frame).unwrap();
        assert_eq!(command.code, 17);
        assert_eq!(command.opaque, 101);
        assert!(command.is_response());
        assert_eq!(command.remark(), "Topic route was not found");
        assert!(command.ext_fields.is_empty());
        assert!(command.body.is_empty());
    }

    #[test]
    fn lenient_json_accepts_fastjson_keys() {
        assert_eq!(
            parse_lenient(r#"{0:"127.0.0.1:10911", 1 : "b"}"#).unwrap(),
            json!({"0": "127.0.0.1:10911", "1": "b"})
        );
        let stats = parse_lenient(
            r#"{"offsetTable":{{"topic":"T","brokerName":"b","queueId":2}:{"brokerOffset":3}},"consumeTps":0.0}"#,
        )
        .unwrap();
        let key = stats["offsetTable"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        assert_eq!(
            parse_lenient(&key).unwrap(),
            json!({"topic": "T", "brokerName": "b", "queueId": 2})
        );
        assert_eq!(
            parse_lenient(r#"["a\"b\\c\u00e9\ud83d\ude00", -1.5e3, true, null, []]"#).unwrap(),
            json!(["a\"b\\c\u{e9}\u{1f600}", -1.5e3, true, null, []])
        );
    }

    #[test]
    fn lenient_json_rejects_garbage() {
        for bad in ["", "{", "{\"a\" 1}", "[1,]", "\"abc", "{} x", "tru", "01x"] {
            assert!(parse_lenient(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 2);
        assert!(parse_lenient(&deep).unwrap_err().contains("deeply"));
    }
}
