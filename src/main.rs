fn main() -> std::process::ExitCode {
    heartstream::cli::main()
}
