//! hacfg: keep an HAProxy configuration in step with a changing set of nodes.

fn main() -> std::process::ExitCode {
    hacfg::execute()
}
