//! The `tminus` binary: everything is in the library's [`tminus::cli`].

fn main() -> std::process::ExitCode {
    tminus::cli::main()
}
