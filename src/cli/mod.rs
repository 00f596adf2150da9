//! The `heartstream` command line.

mod args;
mod bench;
mod codes;
mod compare;
mod decode;
mod generate;
mod play;
mod run;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "heartstream",
    version,
    about = "HeartMuLa music that plays while it is being generated"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a song and play it while it is being generated (terminal UI)
    Play(play::PlayArgs),
    /// Generate a song into a WAV file and/or raw PCM on stdout, streaming
    Generate(generate::GenerateArgs),
    /// One measured streaming run, printed as a JSON line
    Bench(bench::BenchArgs),
    /// Run the LM alone and write its frames (codes) to a JSON file
    Codes(codes::CodesArgs),
    /// Turn a codes JSON into a WAV file with HeartCodec (offline, as heartlib does)
    Decode(decode::DecodeArgs),
    /// Decode codes with heartlib's windows and with the streaming ones; compare them
    CompareWindows(compare::CompareArgs),
}

/// Parses the command line and runs the command; errors print as one message and exit 1.
pub fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Play(a) => play::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Codes(a) => codes::run(a),
        Command::Decode(a) => decode::run(a),
        Command::CompareWindows(a) => compare::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writes a command's report to standard output; a closed or full stdout is an error that
/// names `what`, not a panic (as `println!` would be).
fn write_stdout(text: &str, what: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| anyhow::anyhow!("cannot write {what} to standard output: {e}"))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEARTSTREAM_LOG")
        .unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
}
