//! How the costs grow: writers and distinct keys, and the queue's length.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{Delivery, DualWrite, Stage};
use plotters::prelude::*;

use crate::scenarios::scratch;
use crate::stats::{micros, quantile};
use crate::store::{Accounts, Store};

/// Concurrent writers of the table.
pub const WRITERS: [usize; 5] = [1, 4, 16, 64, 256];
/// Distinct keys the writers spread over.
pub const KEYS: [u64; 3] = [1, 16, 10_000];

/// One cell: a delivery, a writer count, a key count.
pub struct Cell {
    pub delivery: &'static str,
    pub writers: usize,
    pub keys: u64,
    pub ops_per_second: f64,
    pub p99_us: f64,
}

/// Append and claim cost at one queue length.
pub struct QueueRow {
    pub queued: u64,
    pub append_us: f64,
    pub claim_us: f64,
}

/// The queue-length table.
#[derive(Default)]
pub struct QueueTable {
    pub rows: Vec<QueueRow>,
}

/// Runs `writers` tasks writing keys `0..keys` through `repo` for `length`.
async fn cell(
    repo: &Arc<DualWrite<Store, Store>>,
    writers: usize,
    keys: u64,
    length: Duration,
) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers as u64)
        .map(|writer| {
            let (repo, stop) = (Arc::clone(repo), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut seq = writer;
                while !stop.load(Ordering::Relaxed) {
                    let id = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) % keys;
                    let call = Instant::now();
                    repo.put(id, seq).await.expect("a write");
                    latencies.push(call.elapsed());
                    seq += writers as u64;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a writer"));
    }
    let elapsed = started.elapsed();
    (
        latencies.len() as f64 / elapsed.as_secs_f64(),
        micros(quantile(&mut latencies, 0.99)),
    )
}

/// Throughput and p99 of `DualWrite` writes, sync and journaled, at each
/// writer count and key count.
pub async fn writers_and_keys(length: Duration) -> Vec<Cell> {
    let dir = scratch("growth");
    let mut cells = Vec::new();
    for (delivery, name) in [(Delivery::Sync, "sync"), (Delivery::Journaled, "journaled")] {
        let repo = Arc::new(
            DualWrite::builder(Store::new(), Store::new())
                .queue(
                    SqliteQueue::open(dir.join(format!("{name}.db")))
                        .await
                        .expect("queue"),
                )
                .stage(Stage::DualWrite)
                .delivery(delivery)
                .build()
                .expect("valid settings"),
        );
        // Journaled writes leave entries for the worker: it runs meanwhile,
        // as in production.
        let worker = repo.spawn_worker::<crate::store::AccountsOp>();
        for keys in KEYS {
            for writers in WRITERS {
                let (ops_per_second, p99_us) = cell(&repo, writers, keys, length).await;
                cells.push(Cell {
                    delivery: name,
                    writers,
                    keys,
                    ops_per_second,
                    p99_us,
                });
            }
        }
        worker.shutdown().await.expect("the worker stopped");
    }
    let _ = std::fs::remove_dir_all(&dir);
    cells
}

/// Prints the writer/key table.
pub fn print_writer_table(cells: &[Cell]) {
    println!("growth: DualWrite writes by writers and distinct keys (ops/s, p99 us)");
    print!("  {:<10} {:>6}", "delivery", "keys");
    for writers in WRITERS {
        print!(" {:>20}", format!("{writers} writers"));
    }
    println!();
    for chunk in cells.chunks(WRITERS.len()) {
        print!("  {:<10} {:>6}", chunk[0].delivery, chunk[0].keys);
        for cell in chunk {
            print!(
                " {:>20}",
                format!("{:.0}/s {:.0}us", cell.ops_per_second, cell.p99_us)
            );
        }
        println!();
    }
}

/// Prints the queue-length table.
pub fn print_queue_table(table: &QueueTable) {
    println!("growth: SqliteQueue by entries already queued");
    println!(
        "  {:>10} {:>14} {:>22}",
        "queued", "append us", "claim+complete us/op"
    );
    for row in &table.rows {
        println!(
            "  {:>10} {:>14.1} {:>22.1}",
            row.queued, row.append_us, row.claim_us
        );
    }
}

/// Draws throughput against writers, one line per delivery and key count.
pub fn chart(cells: &[Cell], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let top = cells
        .iter()
        .map(|cell| cell.ops_per_second)
        .fold(1.0, f64::max)
        * 2.0;
    let bottom = cells
        .iter()
        .map(|cell| cell.ops_per_second)
        .fold(f64::INFINITY, f64::min)
        .max(1.0)
        / 2.0;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "DualWrite writes: throughput by concurrent writers",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..256f64).log_scale(), (bottom..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("concurrent writers")
        .y_desc("writes/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (index, chunk) in cells.chunks(WRITERS.len()).enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let label = format!("{} {} keys", chunk[0].delivery, chunk[0].keys);
        chart
            .draw_series(LineSeries::new(
                chunk
                    .iter()
                    .map(|cell| (cell.writers as f64, cell.ops_per_second)),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}
