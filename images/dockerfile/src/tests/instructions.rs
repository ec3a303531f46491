use super::*;
use crate::parser::parse;

fn ops(text: &str) -> Vec<Op> {
    let p = parse(text.as_bytes()).unwrap();
    instructions(&p.nodes)
        .unwrap()
        .into_iter()
        .map(|i| i.op)
        .collect()
}

fn one(text: &str) -> Op {
    ops(&format!("FROM a\n{text}\n")).remove(1)
}

fn fails(text: &str) -> String {
    let p = parse(format!("FROM a\n{text}\n").as_bytes()).unwrap();
    instructions(&p.nodes).unwrap_err().to_string()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn forms_and_arguments() {
    assert_eq!(
        one(r#"CMD ["a", "b c"]"#),
        Op::Cmd(CommandLine::Exec(s(&["a", "b c"])))
    );
    assert_eq!(
        one("cmd echo $HOME"),
        Op::Cmd(CommandLine::Shell("echo $HOME".into()))
    );
    // Not JSON after all: the shell form, as Docker reads it.
    assert_eq!(
        one(r#"ENTRYPOINT ["a", "#),
        Op::Entrypoint(CommandLine::Shell(r#"["a","#.into()))
    );
    assert_eq!(
        one(r#"SHELL ["/bin/bash", "-c"]"#),
        Op::Shell(s(&["/bin/bash", "-c"]))
    );
    assert_eq!(
        one("EXPOSE 8080 80/tcp"),
        Op::Expose(s(&["80/tcp", "8080"]))
    );
    assert_eq!(one("VOLUME /a /b"), Op::Volume(s(&["/a", "/b"])));
    assert_eq!(one(r#"VOLUME ["/a b"]"#), Op::Volume(s(&["/a b"])));
    assert_eq!(one("USER app:app"), Op::User("app:app".into()));
    assert_eq!(
        one("MAINTAINER Jane <j@x>"),
        Op::Maintainer("Jane <j@x>".into())
    );
    assert_eq!(
        one(r#"ENV A="b c" D=e\ f"#),
        Op::Env(vec![
            ("A".into(), "\"b c\"".into()),
            ("D".into(), "e\\ f".into())
        ])
    );
    assert_eq!(
        one("ENV A b  c"),
        Op::Env(vec![("A".into(), "b  c".into())])
    );
    assert_eq!(
        one("LABEL \"k y\"=v"),
        Op::Label(vec![("\"k y\"".into(), "v".into())])
    );
    assert_eq!(
        one("ARG A B=2 C=\"x y\""),
        Op::Arg(vec![
            ("A".into(), None),
            ("B".into(), Some("2".into())),
            ("C".into(), Some("\"x y\"".into()))
        ])
    );
    let Op::Copy(c) = one("COPY --from=build --chown=1:2 --chmod=644 --link a b /d/") else {
        panic!()
    };
    assert_eq!((c.sources, c.dest.as_str()), (s(&["a", "b"]), "/d/"));
    assert_eq!(
        (
            c.from.as_deref(),
            c.chown.as_deref(),
            c.chmod.as_deref(),
            c.link
        ),
        (Some("build"), Some("1:2"), Some("644"), true)
    );
    let Op::Copy(c) = ops("FROM a\nCOPY <<A <<B /d/\none\nA\ntwo\nB\n").remove(1) else {
        panic!()
    };
    assert_eq!(
        c.inline
            .iter()
            .map(|d| d.content.as_str())
            .collect::<Vec<_>>(),
        ["one\n", "two\n"]
    );
    assert!(c.sources.is_empty());
    let Op::Add(a) = one("ADD --checksum=sha256:00 http://x/y /z") else {
        panic!()
    };
    assert_eq!(a.checksum.as_deref(), Some("sha256:00"));
    assert_eq!(
        ops("from ALPINE as Build\n")[0],
        Op::From {
            image: "ALPINE".into(),
            name: Some("build".into()),
            platform: None
        }
    );
    let Op::From { platform, .. } = &ops("FROM --platform=$BUILDPLATFORM a\n")[0] else {
        panic!()
    };
    assert_eq!(platform.as_deref(), Some("$BUILDPLATFORM"));
    let Op::Onbuild { trigger, parsed } = one("ONBUILD RUN make") else {
        panic!()
    };
    assert_eq!(trigger, "RUN make");
    assert!(matches!(parsed.op, Op::Run(_)));
    let Op::Healthcheck(h) = one("HEALTHCHECK --interval=5s --retries=2 CMD curl -f x") else {
        panic!()
    };
    assert_eq!(
        (h.test.as_slice(), h.interval, h.retries),
        (s(&["CMD-SHELL", "curl -f x"]).as_slice(), 5_000_000_000, 2)
    );
    let Op::Healthcheck(h) = one("HEALTHCHECK none") else {
        panic!()
    };
    assert_eq!(h.test, ["NONE"]);
    let Op::Run(r) = one("RUN --network=none true") else {
        panic!()
    };
    assert_eq!(r.network.as_deref(), Some("none"));
}

#[test]
fn errors_name_the_line_and_say_what_docker_says() {
    for (text, says) in [
        ("FOO bar", "unknown instruction: FOO"),
        ("RUN", "RUN requires at least one argument"),
        ("USER", "USER requires exactly one argument"),
        ("ENV", "ENV requires at least one argument"),
        ("ENV A", "ENV must have two arguments"),
        ("ENV A=1 B", "Syntax error - can't find = in \"B\""),
        ("ENV =1", "ENV names can not be blank"),
        ("COPY a", "COPY requires at least two arguments"),
        (
            "COPY a <<EOF\nx\nEOF",
            "cannot accept a heredoc as a destination",
        ),
        ("CMD [\"a\", 1]", "arrays must be comprised of strings only"),
        (
            "SHELL /bin/sh -c",
            "SHELL requires the arguments to be in JSON form",
        ),
        (
            "RUN --mount=type=cache,target=/x make",
            "RUN --mount is not supported by skiff",
        ),
        (
            "RUN --security=insecure make",
            "RUN --security is not supported",
        ),
        (
            "RUN --network=host make",
            "RUN --network=host is not supported",
        ),
        (
            "ADD --keep-git-dir=true git@x:y /z",
            "ADD --keep-git-dir is not supported",
        ),
        ("COPY --parents a /b/", "COPY --parents is not supported"),
        ("COPY --bogus a /b", "unknown flag: bogus"),
        (
            "COPY --from=a --from=b x /y",
            "duplicate flag specified: from",
        ),
        ("COPY --from x /y", "missing a value on flag: from"),
        (
            "COPY --link=maybe x /y",
            "expecting boolean value for flag link, not: maybe",
        ),
        ("EXPOSE --x 80", "unknown flag: x"),
        (
            "ONBUILD ONBUILD RUN x",
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
        (
            "ONBUILD MAINTAINER x",
            "MAINTAINER isn't allowed as an ONBUILD trigger",
        ),
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        (
            "HEALTHCHECK WHAT x",
            "Unknown type \"WHAT\" in HEALTHCHECK (try CMD)",
        ),
        ("HEALTHCHECK --interval=5 CMD x", "missing unit in duration"),
        (
            "VOLUME [\"\"]",
            "VOLUME specified can not be an empty string",
        ),
    ] {
        let err = fails(text);
        assert!(
            err.starts_with("dockerfile parse error on line 2: "),
            "{text}: {err}"
        );
        assert!(err.contains(says), "{text}: {err}");
    }
    let p = parse(b"FROM a AS 1x\n").unwrap();
    assert!(instructions(&p.nodes)
        .unwrap_err()
        .to_string()
        .contains("invalid name for build stage"));
    let p = parse(b"FROM a b\n").unwrap();
    assert!(instructions(&p.nodes)
        .unwrap_err()
        .to_string()
        .contains("one or three arguments"));
}
