use clap::Parser;

fn main() {
    let cli = pooltrace::cli::Cli::parse();
    match pooltrace::run(cli) {
        Ok(status) => std::process::exit(status),
        Err(error) => {
            eprintln!("pooltrace: error: {error}");
            std::process::exit(1);
        }
    }
}
