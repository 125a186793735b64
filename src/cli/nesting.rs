//! A linear pre-scan of YAML or JSON text for how deeply its flow collections (`[`, `{`) nest.
//! serde_yaml (libyaml) refuses more than 128 levels as well, but only after a scan whose cost
//! grows with the square of the depth: a 200 KB file nested 100,000 deep took 20 s to be refused.
//! This refuses it in a millisecond, before any parser runs.
//!
//! It follows just enough of YAML to not count brackets that are text: quoted scalars, comments,
//! block scalars (`|`, `>`) and brackets inside plain scalars of block context (`image: a[1]`).
//! Anything it cannot follow it leaves to the parser, which still has its own limit.

/// Most nested flow collections accepted: the limit of serde_yaml and of the route parser
/// ([`crate::rocketmq::frame::parse_lenient`]), so no file the parsers accept is refused here.
pub const MAX_DEPTH: usize = 128;

/// `Err` (one line, with the position) when `text` nests more than [`MAX_DEPTH`] levels deep.
pub fn check(text: &str) -> Result<(), String> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut line_start = 0usize;
    let mut i = 0usize;
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    while i < b.len() {
        // Where a new token (a scalar or a collection) may begin. In flow context the flow
        // indicators end a plain scalar, and JSON puts no space after `:`.
        let token_start = i == 0
            || is_space(b[i - 1])
            || (depth > 0 && matches!(b[i - 1], b'[' | b'{' | b',' | b':'));
        match b[i] {
            b'\n' => {
                line += 1;
                line_start = i + 1;
            }
            b'#' if i == 0 || is_space(b[i - 1]) => {
                while i + 1 < b.len() && b[i + 1] != b'\n' {
                    i += 1;
                }
            }
            b'"' if token_start => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    } else if b[i] == b'\n' {
                        line += 1;
                        line_start = i + 1;
                    }
                    i += 1;
                }
            }
            b'\'' if token_start => {
                i += 1;
                // `''` is a quote inside the scalar.
                while i < b.len() && !(b[i] == b'\'' && b.get(i + 1) != Some(&b'\'')) {
                    if b[i] == b'\'' {
                        i += 1;
                    } else if b[i] == b'\n' {
                        line += 1;
                        line_start = i + 1;
                    }
                    i += 1;
                }
            }
            b'[' | b'{' if token_start || depth > 0 => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "nested more than {MAX_DEPTH} levels deep (line {line}, column {}), refused \
                         before parsing",
                        i - line_start + 1
                    ));
                }
            }
            b']' | b'}' if depth > 0 => depth -= 1,
            b'|' | b'>' if token_start && depth == 0 => {
                // A block scalar: its lines are those indented more than the line that opens it
                // (and blank ones). They are text, whatever they hold.
                let indent = indentation(&b[line_start..]);
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                while i < b.len() {
                    let next = &b[i + 1..];
                    let rest = next.iter().position(|&c| c == b'\n').unwrap_or(next.len());
                    let content = &next[..rest];
                    let blank = content.iter().all(|&c| is_space(c));
                    if !blank && indentation(content) <= indent {
                        break;
                    }
                    line += 1;
                    line_start = i + 1;
                    i += 1 + rest;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Leading spaces of a line.
fn indentation(line: &[u8]) -> usize {
    line.iter().take_while(|&&c| c == b' ').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(open: &str, close: &str, depth: usize) -> String {
        format!("{}1{}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn the_limit_is_128_levels_of_either_bracket() {
        assert_eq!(check(&nested("[", "]", 128)), Ok(()));
        assert_eq!(check(&nested("{\"a\":", "}", 128)), Ok(()));
        assert_eq!(check(&nested("{a: ", "}", 128)), Ok(()));
        assert_eq!(
            check(&nested("[", "]", 129)),
            Err(
                "nested more than 128 levels deep (line 1, column 129), refused before parsing"
                    .into()
            )
        );
        let e = check(&format!("a: 1\nb:\n  c: {}", nested("{\"a\":", "}", 129))).unwrap_err();
        assert!(e.contains("(line 3, column 646)"), "{e}");
        // Levels add up across lines, and closing ones are counted.
        let many = "[\n".repeat(100) + &"]\n".repeat(100);
        assert_eq!(check(&many.repeat(3)), Ok(()));
        assert!(check(&"[\n".repeat(129)).is_err());
    }

    #[test]
    fn a_hundred_thousand_levels_are_refused_at_once() {
        let started = std::time::Instant::now();
        assert!(check(&nested("[", "]", 100_000)).is_err());
        assert!(check(&nested("{\"a\":", "}", 100_000)).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn brackets_that_are_text_do_not_count() {
        let open = "[".repeat(200);
        for text in [
            format!("a: \"{open}\"\n"),
            format!("a: \"x\\\"{open}\"\n"),
            format!("a: '{open}'\nb: 'it''s {open}'\n"),
            format!("a: 1 # {open}\n# {open}\n"),
            format!("a: x{open}\n"),
            format!("- image: app{open}\n"),
            format!("{{\"a\": \"{open}\", \"b\": [\"{open}\"]}}"),
            format!("script: |\n  {open}\n\n  echo {open}\nnext: [1]\n"),
            format!("- >-\n    {open}\n- [1]\n"),
        ] {
            assert_eq!(check(&text), Ok(()), "{text}");
        }
        // After a block scalar, scanning goes on.
        assert!(check(&format!("a: |\n  x\nb: {open}")).is_err());
        // A quote inside a plain scalar starts no string.
        assert!(check(&format!("a: don't\nb: {open}")).is_err());
    }

    #[test]
    fn unterminated_text_is_left_to_the_parser() {
        assert_eq!(check("a: \"unterminated"), Ok(()));
        assert_eq!(check("a: 'unterminated"), Ok(()));
        assert_eq!(check("a: |"), Ok(()));
        assert_eq!(check(""), Ok(()));
    }
}
