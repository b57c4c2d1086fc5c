use clap::Parser;

fn main() -> std::process::ExitCode {
    torii::cli::run(torii::cli::Cli::parse())
}
