use super::*;

fn env() -> Vec<(String, String)> {
    [
        ("HOME", "/root"),
        ("SH", "dash"),
        ("EMPTY", ""),
        ("GREEK", "αβγ"),
        ("SPACED", "  x y  "),
        ("PATHS", "/usr/local/bin:/usr/bin:/bin"),
        ("FILE", "archive.tar.gz"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// (input, expected word or None for an error), with `\` as the escape character.
const WORD_CASES: &[(&str, Option<&str>)] = &[
    ("plain", Some("plain")),
    ("pl'ai'n", Some("plain")),
    ("pl'ain", None),
    (r"pl\'ain", Some("pl'ain")),
    (r"pl\\'ain", None),
    (r"a\tb", Some("atb")),
    (r#""a\tb""#, Some(r"a\tb")),
    (r#""a\\tb""#, Some(r"a\tb")),
    (r"'a\tb'", Some(r"a\tb")),
    (r"end\", Some("end")),
    (r"end\\", Some(r"end\")),
    (r#""open"#, None),
    (r#""open\""#, None),
    (r#""it's""#, Some("it's")),
    ("'open", None),
    (r"'back\'", Some(r"back\")),
    (r#""''""#, Some("''")),
    ("$.", Some("$.")),
    ("x$1y", Some("xy")),
    ("x$.y", Some("x$.y")),
    ("x$home.", Some("x.")),
    ("x$HOME", Some("x/root")),
    (r"x\$HOME", Some("x$HOME")),
    (r"x\\$HOME", Some(r"x\/root")),
    (r#""x\$HOME""#, Some("x$HOME")),
    (r#""x\\$HOME""#, Some(r"x\/root")),
    (r"\${}", Some("${}")),
    (r"x\${}y", Some("x${}y")),
    ("${}", None),
    ("x${}y", None),
    ("x${unset}y", Some("xy")),
    ("x${HOME}y", Some("x/rooty")),
    ("x${.}", None),
    ("x${NO:-d}y", Some("xdy")),
    ("x${HOME:-d}y", Some("x/rooty")),
    ("x${NO:-$HOME}y", Some("x/rooty")),
    ("x${NO:-${HOME:-z}}y", Some("x/rooty")),
    ("x${NO:-${NO2:-z}}y", Some("xzy")),
    ("x${NO:ZZ}", None),
    ("x${NO?}", None),
    ("x${NO:?}", None),
    ("x${HOME?}", Some("x/root")),
    ("x${HOME:?}", Some("x/root")),
    ("x${EMPTY?}", Some("x")),
    ("x${EMPTY:?}", None),
    ("x${EMPTY-d}", Some("x")),
    ("x${EMPTY:-d}", Some("xd")),
    ("x${EMPTY+s}", Some("xs")),
    ("x${EMPTY:+s}", Some("x")),
    ("x${NO+s}", Some("x")),
    ("x${NO-d}", Some("xd")),
    ("x${NO:+${HOME}}y", Some("xy")),
    ("x${HOME:+${NO}}y", Some("xy")),
    ("x${HOME:+${SH}}y", Some("xdashy")),
    ("x${HOME:+s}y", Some("xsy")),
    ("'x${NO}'", Some("x${NO}")),
    (r#""x${HOME}""#, Some("x/root")),
    (r#""x'$HOME'""#, Some("x'/root'")),
    ("'$HOME'", Some("$HOME")),
    (r"'\$HOME'", Some(r"\$HOME")),
    ("x${HOME", None),
    ("x${HOME:=d}", None),
    ("x${HOME:+${HOME}:}y", Some("x/root:y")),
    (r"x${NO:-\$HOME:}y", Some("x$HOME:y")),
    (r"x${NO:-\${HOME}z}y", Some("x${HOMEz}y")),
    ("가'나'다", Some("가나다")),
    ("$GREEK", Some("αβγ")),
    ("ω$GREEK", Some("ωαβγ")),
    ("${{a}", None),
    ("${a}}", Some("}")),
    ("${a:-b}}", Some("b}")),
    ("${a:-b ${c}", None),
    ("${a:-b {c}", Some("b {c")),
    ("${:}", None),
    ("${:-b}", None),
    ("$9", Some("")),
    ("${12:-d}", Some("d")),
    ("$007x", Some("x")),
    ("$@@", Some("@")),
    ("${#:-d}", Some("d")),
    ("${$}", Some("")),
    ("${!:+s}", Some("")),
    ("$0", Some("")),
    ("${SPACED}", Some("  x y  ")),
    // BuildKit's pattern operators.
    ("${PATHS#*:}", Some("/usr/bin:/bin")),
    ("${PATHS##*:}", Some("/bin")),
    ("${PATHS%:*}", Some("/usr/local/bin:/usr/bin")),
    ("${PATHS%%:*}", Some("/usr/local/bin")),
    ("${FILE%.*}", Some("archive.tar")),
    ("${FILE%%.*}", Some("archive")),
    ("${FILE#nomatch}", Some("archive.tar.gz")),
    ("${FILE#a?c}", Some("hive.tar.gz")),
    ("${NO#x}", Some("")),
    ("${FILE:#x}", None),
    ("${FILE/a/A}", Some("Archive.tar.gz")),
    ("${FILE//a/A}", Some("Archive.tAr.gz")),
    ("${FILE/.*/}", Some("archive")),
    ("${FILE//[/x}", Some("archive.tar.gz")),
    ("${FILE/a}", None),
    ("${NO/a/b}", Some("")),
    (r"${FILE/\q/x}", None),
];

#[test]
fn words_substitute_as_buildkit_does() {
    check(WORD_CASES, |lex, input, env| lex.word(input, env));
}

/// Runs a table: each input gives the expected text, or an error for `None`.
fn check(
    cases: &[(&str, Option<&str>)],
    f: impl Fn(&Lexer, &str, &Vec<(String, String)>) -> Result<String, ShellError>,
) {
    let lex = Lexer::new('\\');
    let env = env();
    for (input, want) in cases {
        let got = f(&lex, input, &env);
        match want {
            Some(w) => assert_eq!(got.as_deref(), Ok(*w), "{input}"),
            None => assert!(got.is_err(), "{input} gave {got:?}"),
        }
    }
}

#[test]
fn errors_name_the_text_and_reason() {
    let lex = Lexer::new('\\');
    let err = lex.word("${NEED:?set it}", &env()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to process \"${NEED:?set it}\": NEED: set it"
    );
    let err = lex.word("${NEED?}", &env()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("NEED: is not allowed to be unset"),
        "{err}"
    );
    let err = lex.word("${EMPTY:?}", &env()).unwrap_err();
    assert!(
        err.to_string().ends_with("is not allowed to be empty"),
        "{err}"
    );
}

/// (input, words joined with `,`, or None for an error).
const SPLIT_CASES: &[(&str, Option<&str>)] = &[
    ("one", Some("one")),
    ("one${NO}two", Some("onetwo")),
    ("a${SPACED}b", Some("a,x,y,b")),
    ("a\"${SPACED}\"b", Some("a  x y  b")),
    ("a \"${SPACED}\"b", Some("a,  x y  b")),
    ("a${SPACED}", Some("a,x,y")),
    ("a  b\t c", Some("a,b,c")),
    (r"a\ b", Some("a b")),
    ("a\" b", None),
    (r#"a\" b"#, Some("a\",b")),
    ("a'' b", Some("a,b")),
    ("'' b", Some("b")),
    ("ab${NO:-y}", Some("aby")),
    ("80 ${HOME:+443/udp}", Some("80,443/udp")),
];

#[test]
fn words_split_as_buildkit_does() {
    check(SPLIT_CASES, |lex, input, env| {
        lex.words(input, env).map(|w| w.join(","))
    });
}

#[test]
fn backtick_escape() {
    let lex = Lexer::new('`');
    let env = env();
    assert_eq!(lex.word(r"C:\dir`$HOME", &env).unwrap(), r"C:\dir$HOME");
    assert_eq!(lex.word(r#""a``b""#, &env).unwrap(), "a`b");
    assert_eq!(lex.word(r"a\$HOME", &env).unwrap(), r"a\/root");
}

#[test]
fn raw_modes_keep_quotes_escapes_and_unset_references() {
    let lex = Lexer {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset: true,
        ..Lexer::new('\\')
    };
    let env = env();
    assert_eq!(lex.word("'a' \"b\"", &env).unwrap(), "'a' \"b\"");
    assert_eq!(lex.word(r"a\ b", &env).unwrap(), r"a\ b");
    assert_eq!(
        lex.word("$NO ${NO} ${NO:-x}", &env).unwrap(),
        "$NO ${NO} ${NO:-x}"
    );
    assert_eq!(
        lex.words("cat <<EOF >x", &env).unwrap(),
        ["cat", "<<EOF", ">x"]
    );
    assert_eq!(
        lex.words("cat << 'EOF'", &env).unwrap(),
        ["cat", "<< 'EOF'"]
    );
}

#[test]
fn hostile_words_end_in_errors_not_panics() {
    let lex = Lexer::new('\\');
    let env = env();
    let deep = "${A:-".repeat(10_000) + &"}".repeat(10_000);
    let err = lex.word(&deep, &env).unwrap_err().to_string();
    assert!(err.contains("nested deeper"), "{}", &err[err.len() - 80..]);
    let long = "x".repeat(1 << 20);
    assert_eq!(lex.word(&long, &env).unwrap().len(), 1 << 20);
    // A tiny deterministic PRNG over a small alphabet of the lexer's special characters.
    let alphabet: Vec<char> = "${}:-+?#%/\\'\" aZ9_*\n`<".chars().collect();
    let mut seed: u64 = 0x5eed;
    for _ in 0..20_000 {
        let len = (seed % 24) as usize;
        let text: String = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                alphabet[(seed % alphabet.len() as u64) as usize]
            })
            .collect();
        let _ = lex.word(&text, &env);
        let _ = lex.words(&text, &env);
    }
}
