//! `flamegraph`: `perf script` text on stdin (or a file) to an SVG flame graph, for
//! `benches/profile.sh` (module `benches::flamegraph`).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Draws a flame graph from `perf script` output.
#[derive(Parser)]
#[command(name = "flamegraph")]
struct Args {
    /// `perf script` output; stdin when absent.
    input: Option<PathBuf>,
    /// The SVG to write.
    #[arg(long)]
    out: PathBuf,
    /// Also write the folded stacks (one line per stack) here.
    #[arg(long)]
    folded: Option<PathBuf>,
    /// The graph's title.
    #[arg(long, default_value = "Flame graph")]
    title: String,
    /// What the samples' weights count (perf's period: nanoseconds for `cpu-clock`).
    #[arg(long, default_value = "ns")]
    unit: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(r) => {
            eprintln!(
                "flamegraph: {} ({} {} in {} distinct stacks)",
                args.out.display(),
                r.weight,
                args.unit,
                r.stacks
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flamegraph: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> io::Result<benches::flamegraph::Rendered> {
    let input: Box<dyn io::BufRead> = match &args.input {
        Some(path) => {
            Box::new(BufReader::new(File::open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("{}: {e}", path.display()))
            })?))
        }
        None => Box::new(io::stdin().lock()),
    };
    let mut folded = match &args.folded {
        Some(path) => Some(BufWriter::new(File::create(path)?)),
        None => None,
    };
    let mut svg = BufWriter::new(File::create(&args.out)?);
    let rendered = benches::flamegraph::render(
        input,
        &args.title,
        &args.unit,
        &mut svg,
        folded.as_mut().map(|f| f as &mut dyn Write),
    )?;
    svg.flush()?;
    if let Some(f) = folded.as_mut() {
        f.flush()?;
    }
    Ok(rendered)
}
