use clap::Parser;

fn main() {
    let cli = pooltrace::cli::Cli::parse();
    if let Err(error) = pooltrace::run(cli) {
        eprintln!("pooltrace: error: {error}");
        std::process::exit(1);
    }
}
