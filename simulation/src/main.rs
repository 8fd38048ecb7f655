//! `tandem-simulation`: run simulated seeds.
//!
//! - `--seed N [--trace]`: one seed; prints its violations (and its trace with `--trace`).
//! - `--seeds N [--from S] [--jobs J]`: seeds S..S+N with a progress bar and a final
//!   `N passed, N failed` line; every failure prints its seed and the command reproducing it.
//! - `--until-violation`: stop at the first failing seed and exit 0 then, 1 if none failed
//!   (how a mutant is shown to be caught).
//! - `--mutant NAME`: remove one safety rule for the whole run (a build with `--features
//!   mutants` only; the names are in `tandem_raft_store::mutant`).

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;

use tandem_raft_store::mutant::EnableError;
use tandem_raft_store::mutant::Mutant;
use tandem_simulation::cluster;
use tandem_simulation::cluster::Plan;
use tandem_simulation::reproduce;

/// Violations printed per failing seed in a many-seed run.
const VIOLATIONS_SHOWN: usize = 5;

struct Args {
    seed: Option<u64>,
    seeds: u64,
    from: u64,
    jobs: u64,
    trace: bool,
    until_violation: bool,
    mutant: Option<Mutant>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seed: None,
        seeds: 0,
        from: 0,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        trace: false,
        until_violation: false,
        mutant: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |what: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{what} needs a number"))
        };
        match arg.as_str() {
            "--seed" => a.seed = Some(num("--seed")?),
            "--seeds" => a.seeds = num("--seeds")?,
            "--from" => a.from = num("--from")?,
            "--jobs" => a.jobs = num("--jobs")?.max(1),
            "--trace" => a.trace = true,
            "--until-violation" => a.until_violation = true,
            "--mutant" => {
                let name = it.next().unwrap_or_default();
                a.mutant = Some(Mutant::from_name(&name).ok_or_else(|| {
                    let names: Vec<_> = Mutant::ALL.iter().map(|m| m.name()).collect();
                    format!("--mutant {name:?}: no such mutant; one of {}", names.join(", "))
                })?);
            }
            "-h" | "--help" => return Err(
                "usage: tandem-simulation (--seed N [--trace] | --seeds N [--from S] [--jobs J] [--until-violation]) [--mutant NAME]"
                    .into(),
            ),
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    if a.seed.is_none() && a.seeds == 0 {
        return Err("give --seed N or --seeds N; try --help".into());
    }
    if let Some(m) = a.mutant {
        enable(m)?;
    }
    Ok(a)
}

fn enable(m: Mutant) -> Result<(), String> {
    tandem_raft_store::mutant::enable(m).map_err(|e| match e {
        EnableError::NotInThisBuild => {
            format!("--mutant {m}: {e}; run `cargo run --features mutants -- --mutant {m} ...` in simulation/")
        }
        EnableError::AnotherIsOn(_) => format!("--mutant {m}: {e}"),
    })
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        let report = cluster::run(&Plan::random(seed));
        if args.trace {
            for line in &report.trace {
                println!("{line}");
            }
        }
        for v in &report.violations {
            println!("seed {seed}: {v}");
        }
        println!(
            "seed {seed}: {} ({} writes acknowledged)",
            if report.violations.is_empty() {
                "passed"
            } else {
                "FAILED"
            },
            report.acked
        );
        return if report.violations.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    many(&args)
}

fn many(args: &Args) -> ExitCode {
    let next = Arc::new(AtomicU64::new(args.from));
    let (end, total) = (args.from + args.seeds, args.seeds);
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::new())));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.jobs)
        .map(|_| {
            let (next, done, failed, stop) = (next.clone(), done.clone(), failed.clone(), stop.clone());
            let until = args.until_violation;
            std::thread::spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= end || stop.load(Ordering::SeqCst) {
                    return;
                }
                let report = cluster::run(&Plan::random(seed));
                if !report.violations.is_empty() {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "\nseed {seed} FAILED:");
                    for v in report.violations.iter().take(VIOLATIONS_SHOWN) {
                        let _ = writeln!(out, "  {v}");
                    }
                    if report.violations.len() > VIOLATIONS_SHOWN {
                        let more = report.violations.len() - VIOLATIONS_SHOWN;
                        let _ = writeln!(out, "  … and {more} more (run the seed alone to see all)");
                    }
                    let _ = writeln!(out, "  reproduce: {}", reproduce(seed));
                    failed.lock().expect("failed lock").push(seed);
                    if until {
                        stop.store(true, Ordering::SeqCst);
                    }
                }
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                progress(n, total, failed.lock().expect("failed lock").len(), started);
            })
        })
        .collect();
    for w in workers {
        if w.join().is_err() {
            eprintln!("\na simulation worker panicked");
            return ExitCode::FAILURE;
        }
    }
    let n = done.load(Ordering::SeqCst);
    let mut failed = failed.lock().expect("failed lock").clone();
    failed.sort();
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    eprintln!();
    println!(
        "{} passed, {} failed ({n} seeds in {:.1} min, {:.0} seeds/min){}",
        n - failed.len() as u64,
        failed.len(),
        minutes,
        n as f64 / minutes.max(1e-9),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; failing seeds: {failed:?}")
        }
    );
    match (args.until_violation, failed.is_empty()) {
        (true, false) => {
            println!("violation found after {n} seeds (first failing seed {})", failed[0]);
            ExitCode::SUCCESS
        }
        (true, true) => {
            println!("no violation in {n} seeds");
            ExitCode::FAILURE
        }
        (false, true) => ExitCode::SUCCESS,
        (false, false) => ExitCode::FAILURE,
    }
}

/// One progress line, redrawn in place: a bar, seeds done of all, failures, rate.
fn progress(done: u64, total: u64, failed: usize, started: Instant) {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH / total.max(1)) as usize;
    let per_min = done as f64 / (started.elapsed().as_secs_f64() / 60.0).max(1e-9);
    eprint!(
        "\r[{}{}] {done}/{total} seeds, {failed} failed, {per_min:.0} seeds/min ",
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled)
    );
}
