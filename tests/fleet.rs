//! `hacfg fleet` and the query its balancers answer.

use crate::harness::TestEnv;

/// Serf sends a query handler's stdout and stderr back as its answer: a
/// query hacfg does not know gets nothing at all (before, `hacfg: query:
/// ignored` on stderr was sent back as an answer), and the folder is left
/// as it is.
#[test]
fn an_unknown_query_gets_no_answer() {
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "w1", "10.0.0.1:80"]);
    for name in ["other", ""] {
        let done = env
            .call(&["--no-check", "-v", "serf"])
            .env("SERF_EVENT", "query")
            .env("SERF_QUERY_NAME", name)
            .stdin("some payload\n")
            .unchanged()
            .code(0);
        assert_eq!((done.stdout.as_str(), done.stderr.as_str()), ("", ""));
    }
}
