//! The `podmortem` binary.

fn main() -> std::process::ExitCode {
    podmortem::cli::main()
}
