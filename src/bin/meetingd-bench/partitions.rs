//! `partitions`: what the partition count costs and buys.
//!
//! - Spread: the share of all partitions (so of the meetings, spread evenly
//!   over them) on the busiest master of a cluster of 3, 6 and 10 masters,
//!   its slots split as `redis-cli --cluster create` splits them (even,
//!   contiguous ranges), against the even share 1/masters.
//! - Cost: on a Redis of its own, with `stored` meetings of one instance
//!   each and `running` of them running (10 people in each), the time,
//!   Redis CPU and Lua calls of one ACTIVE, one ATTENDANCE and one idle
//!   tick (nothing due), each of which makes a call per partition.

use std::time::{Duration, Instant};

use meetingd::store::{InstanceRef, Store, User};

use super::spawn::OwnRedis;
use super::{connect_raw, per_op, redis_pid, store_options, usage};

/// Redis Cluster's slots.
const SLOTS: u32 = 16_384;

/// The master owning `slot` among `masters` given even contiguous ranges.
fn master_of(slot: u32, masters: u32) -> u32 {
    // redis-cli gives master i the slots from i*SLOTS/masters on
    (0..masters)
        .rev()
        .find(|m| slot >= m * SLOTS / masters)
        .unwrap_or(0)
}

pub async fn partitions(
    counts: &[u64],
    masters: &[u32],
    stored: u64,
    running: u64,
) -> Result<(), String> {
    println!("Spread: the busiest master's share of the partitions (even: 1/masters)\n");
    print!("| partitions |");
    for m in masters {
        print!(" {m} masters |");
    }
    println!();
    println!("|---:|{}", "---:|".repeat(masters.len()));
    for &count in counts {
        print!("| {count} |");
        for &m in masters {
            let mut on = vec![0u64; m as usize];
            for p in 0..count {
                let owner = master_of(
                    u32::from(meetingd::store::channel_slot(&meetingd::store::Keys::due(
                        p,
                    ))),
                    m,
                );
                on[owner as usize] += 1;
            }
            let busiest = on.iter().copied().max().unwrap_or(0);
            print!(
                " {:.0} % ({:.2}× even) |",
                busiest as f64 * 100.0 / count as f64,
                busiest as f64 * f64::from(m) / count as f64
            );
        }
        println!();
    }

    println!(
        "\nCost, on one Redis: {stored} meetings stored (one instance each), {running} running \
         with 10 people each; per call of the store\n"
    );
    println!(
        "| partitions | ACTIVE | Redis CPU | Lua calls | ATTENDANCE | Redis CPU | Lua calls | idle tick | Redis CPU | Lua calls |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &count in counts {
        let redis = OwnRedis::start(false)?;
        let mut options = store_options(&redis.url);
        options.partitions = Some(count);
        let store = Store::connect(options).await.map_err(|e| e.to_string())?;
        let now = chrono::Utc::now().timestamp_millis();
        fill(&store, stored, running, now).await?;
        let mut conn = connect_raw(&redis.url).await?;
        let pid = redis_pid(&mut conn).await?;
        print!("| {count} |");
        for what in ["active", "attendance", "tick"] {
            let before = usage(&mut conn, pid, None).await?;
            let started = Instant::now();
            let mut calls = 0u64;
            // at least 2 s and 50 calls, for the CPU's 10 ms clock ticks
            while calls < 50 || started.elapsed() < Duration::from_secs(2) {
                let done = match what {
                    "active" => store.active().await.map(|a| a.len() as u64),
                    "attendance" => store.attendance().await.map(|a| a.len() as u64),
                    _ => store.tick(now).await.map(|r| r.activated.len() as u64),
                };
                let got = done.map_err(|e| e.to_string())?;
                let expected = if what == "tick" { 0 } else { running };
                if got != expected {
                    return Err(format!("{what} gave {got}, expected {expected}"));
                }
                calls += 1;
            }
            let took = started.elapsed().as_secs_f64() / calls as f64;
            let after = usage(&mut conn, pid, None).await?;
            let cost = per_op(before, after, calls);
            let (redis_us, lua) = (cost.redis, cost.calls);
            print!(
                " {:.2} ms | {:.0} µs | {:.0} |",
                took * 1000.0,
                redis_us,
                lua
            );
        }
        println!();
    }
    Ok(())
}

/// `stored` meetings, the first `running` running (started a minute
/// before `now`, 10 people in each), the rest a day later; then the tick
/// that starts them.
async fn fill(store: &Store, stored: u64, running: u64, now: i64) -> Result<(), String> {
    super::tick::load_one_instance_each(store, stored, |m| {
        if m <= running {
            now - 60_000
        } else {
            now + 86_400_000
        }
    })
    .await?;
    for u in 1..=10 {
        let user = User {
            id: u,
            name: format!("u{u}"),
            age: 30,
            gender: "-".into(),
            email: format!("u{u}@example.com"),
        };
        store.user_set(&user).await.map_err(|e| e.to_string())?;
    }
    store.tick(now).await.map_err(|e| e.to_string())?;
    for m in 1..=running {
        for u in 1..=10 {
            store
                .join(u, InstanceRef::Current(m))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
