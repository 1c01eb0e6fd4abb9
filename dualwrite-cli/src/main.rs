//! The `dualwrite` binary; everything is in the library, so that services
//! can mount the same subcommands in their own binaries.

fn main() -> std::process::ExitCode {
    dualwrite_cli::main()
}
