use super::*;

fn nodes(text: &str) -> Vec<Node> {
    parse(text.as_bytes()).unwrap().nodes
}

fn err(text: &[u8]) -> Error {
    parse(text).unwrap_err()
}

#[test]
fn continuations_comments_and_line_numbers() {
    let text = "FROM alpine\n\n# a comment\nRUN echo a \\\n  # inside\n\n  b \\\n  c\nrun x\n";
    let n = nodes(text);
    assert_eq!(n.len(), 3);
    assert_eq!((n[0].line, n[0].end_line), (1, 1));
    assert_eq!(n[1].keyword, "run");
    assert_eq!(n[1].rest, "echo a   b   c");
    assert_eq!((n[1].line, n[1].end_line), (4, 8));
    assert_eq!((n[2].keyword.as_str(), n[2].line), ("run", 9));
    let p = parse(text.as_bytes()).unwrap();
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    // An escaped escape character ends the line; trailing blanks after the mark are fine.
    let n = nodes("FROM a\nRUN echo \\\\\nRUN b \\  \n c");
    assert_eq!(n[1].rest, "echo \\\\");
    assert_eq!(n[2].rest, "b  c");
    // Leading blanks before instructions and CRLF line ends.
    let n = nodes("  FROM a\r\n\tRUN x\r\n");
    assert_eq!((n[1].rest.as_str(), n[1].line), ("x", 2));
}

#[test]
fn directives() {
    let p = parse(b"# escape=`\n# syntax=docker/dockerfile:1\nFROM a\nRUN a `\n b\n").unwrap();
    assert_eq!(p.escape, '`');
    assert_eq!(p.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert!(p.warnings[0].contains("ignored"));
    assert_eq!(p.nodes[1].rest, "a  b");
    // Backslash is then an ordinary character.
    let p = parse(b"# escape=`\nFROM a\nRUN dir c:\\\nRUN x\n").unwrap();
    assert_eq!(p.nodes[1].rest, "dir c:\\");
    // After the first other line, a directive is a comment.
    let p = parse(b"FROM a\n# escape=`\nRUN a \\\n b\n").unwrap();
    assert_eq!((p.escape, p.nodes[1].rest.as_str()), ('\\', "a  b"));
    let p = parse(b"# hello\n# escape=`\nFROM a\n").unwrap();
    assert_eq!(p.escape, '\\');
    assert!(err(b"# escape=x\nFROM a")
        .to_string()
        .contains("invalid escape token"));
    let e = err(b"# escape=`\n# escape=\\\nFROM a");
    assert_eq!(
        e.to_string(),
        "dockerfile parse error on line 2: only one escape parser directive can be used"
    );
}

#[test]
fn flags_are_split_off() {
    let n =
        nodes("FROM a\nCOPY --from=build --chown=\"1:1\" -- --odd /dst\nRUN --network=none echo\n");
    assert_eq!(n[1].flags, ["--from=build", "--chown=1:1"]);
    assert_eq!(n[1].rest, "--odd /dst");
    assert_eq!(n[2].flags, ["--network=none"]);
    assert_eq!(n[2].rest, "echo");
}

#[test]
fn heredocs() {
    let n = nodes("FROM a\nRUN <<EOF\necho $HOME\nEOF\nRUN x\n");
    let doc = &n[1].heredocs[0];
    assert_eq!(
        (doc.name.as_str(), doc.expand, doc.content.as_str()),
        ("EOF", true, "echo $HOME\n")
    );
    assert_eq!((n[1].line, n[1].end_line, n[2].line), (2, 4, 5));
    let n = nodes("FROM a\nRUN <<-'END' sh\n\techo hi\n\t\tdeeper\n\tEND\n");
    let doc = &n[1].heredocs[0];
    assert_eq!(
        (doc.expand, doc.chomp, doc.content.as_str()),
        (false, true, "echo hi\ndeeper\n")
    );
    let n = nodes("FROM a\nRUN <<ONE cat && 3<<\"TWO\" cat\nfirst\nONE\nsecond\nTWO\n");
    let names: Vec<_> = n[1]
        .heredocs
        .iter()
        .map(|d| (d.name.as_str(), d.expand, d.content.as_str()))
        .collect();
    assert_eq!(
        names,
        [("ONE", true, "first\n"), ("TWO", false, "second\n")]
    );
    let n = nodes("FROM a\nCOPY <<EOF /etc/x\n# not a comment \\\nEOF\n");
    assert_eq!(n[1].heredocs[0].content, "# not a comment \\\n");
    // JSON form and other instructions take no heredocs.
    let n = nodes("FROM a\nRUN [\"cat\", \"<<EOF\"]\nENV A=<<EOF\n");
    assert!(n[1].heredocs.is_empty() && n[2].heredocs.is_empty());
    let e = err(b"FROM a\nRUN <<EOF\nnever ends\n");
    assert_eq!(
        e.to_string(),
        "dockerfile parse error on line 2: unterminated heredoc"
    );
}

#[test]
fn hostile_text_gives_clear_errors() {
    let e = err(b"FROM a\nRUN echo \xff\xfe\n");
    assert_eq!(e.line(), Some(2));
    assert!(e.to_string().contains("not valid UTF-8"));
    let mut long = b"FROM a\nRUN ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 70_000));
    assert!(err(&long)
        .to_string()
        .contains("line 2: dockerfile line greater than max allowed size"));
    assert!(err(b"").to_string().contains("file with no instructions"));
    assert!(err(b"# only\n\n")
        .to_string()
        .contains("file with no instructions"));
    // Many continuation lines: fine, and quick.
    let many = "FROM a\nRUN x \\\n".to_string() + &"y \\\n".repeat(50_000) + "z\n";
    assert_eq!(nodes(&many).len(), 2);
    let mut seed = 7u64;
    let alphabet = b"FROM RUN COPY <<EOF\n\\`#\"' -=[]${}\t\r";
    for _ in 0..5_000 {
        let text: Vec<u8> = (0..(seed % 64))
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                alphabet[(seed >> 33) as usize % alphabet.len()]
            })
            .collect();
        if let Ok(p) = parse(&text) {
            let _ = crate::instructions::instructions(&p.nodes);
        }
    }
}
