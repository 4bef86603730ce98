use clap::Parser;

fn main() {
    let cli = pooltrace::cli::Cli::parse();
    let status = match pooltrace::run(cli) {
        Ok(status) => status,
        // `| head` closed the pipe because it has read enough; nothing went wrong.
        Err(error) if error.is_closed_pipe() => 0,
        Err(error) => {
            pooltrace::status!("pooltrace: error: {}", error.chain());
            1
        }
    };
    std::process::exit(status);
}
