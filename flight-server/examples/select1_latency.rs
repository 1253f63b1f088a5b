//! `SELECT 1` round trips (GetFlightInfo + DoGet) through arrow-rs's Flight SQL client, for the
//! benchmark script: `select1_latency HOST:PORT CLIENTS ITERATIONS` prints one JSON object with
//! the p50 and p99 latency in microseconds and the queries per second over all clients.

use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::Channel;

async fn client_loop(addr: String, iterations: usize) -> anyhow::Result<Vec<Duration>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client = FlightSqlServiceClient::new(channel);
    let mut times = Vec::with_capacity(iterations);
    // A few round trips first so connections and caches are warm.
    for i in 0..iterations + 20 {
        let started = Instant::now();
        let info = client.execute("SELECT 1".to_string(), None).await?;
        let ticket = info
            .endpoint
            .first()
            .and_then(|e| e.ticket.clone())
            .ok_or_else(|| anyhow::anyhow!("no ticket in the FlightInfo"))?;
        let batches: Vec<_> = client.do_get(ticket).await?.try_collect().await?;
        anyhow::ensure!(
            batches.iter().map(|b| b.num_rows()).sum::<usize>() == 1,
            "SELECT 1 returned other than one row"
        );
        if i >= 20 {
            times.push(started.elapsed());
        }
    }
    Ok(times)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at].as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, clients, iterations] = args.as_slice() else {
        anyhow::bail!("usage: select1_latency HOST:PORT CLIENTS ITERATIONS");
    };
    let clients: usize = clients.parse()?;
    let iterations: usize = iterations.parse()?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client_loop(addr.clone(), iterations)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    println!(
        "{{\"clients\": {clients}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"qps\": {:.0}}}",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.len() as f64 / elapsed
    );
    Ok(())
}
