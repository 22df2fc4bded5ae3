//! `tick`: one whole tick (every partition, step after step, as the
//! scheduler runs it) with `due` transitions among `stored` instances; its
//! duration, its Lua calls and the longest of them (from Redis' SLOWLOG).

use std::time::{Duration, Instant};

use meetingd::store::{InstanceId, Load, Meeting, Store, StoreOptions};

/// SLOWLOG's length for the run. With a threshold of 0 it keeps every
/// command, those Lua runs included (about seven per due instance), so it
/// must hold them all for the count of Lua calls to be whole.
const LOG_LEN: usize = 1_000_000;

pub async fn tick(url: &str, stored: u64, due: u64, batch: usize) -> Result<(), String> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut options = StoreOptions::new(url);
    options.tick_batch = batch;
    options.timeout = Duration::from_secs(30);
    let store = Store::connect(options).await.map_err(|e| e.to_string())?;
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await
        .map_err(|e| e.to_string())?;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    store.ensure_library().await.map_err(|e| e.to_string())?;
    let loading = Instant::now();
    // every step-th meeting is due now, the rest tomorrow
    let step = (stored / due.max(1)).max(1);
    load_one_instance_each(&store, stored, |m| {
        let is_due = due > 0 && m % step == 0 && m / step <= due;
        if is_due { now - 1000 } else { now + 86_400_000 }
    })
    .await?;
    let loaded_in = loading.elapsed();
    for (name, value) in [("slowlog-log-slower-than", 0), ("slowlog-max-len", LOG_LEN)] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let report = store.tick(now).await.map_err(|e| e.to_string())?;
    let took = started.elapsed();
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    if entries.len() >= LOG_LEN {
        return Err(format!(
            "SLOWLOG filled up ({LOG_LEN} commands): the oldest calls are missing; use a smaller --due"
        ));
    }
    let log: Vec<(i64, Vec<String>)> = entries
        .into_iter()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                return None;
            };
            let micros = match fields.get(2) {
                Some(redis::Value::Int(n)) => *n,
                _ => return None,
            };
            let args = match fields.get(3) {
                Some(redis::Value::Array(args)) => args
                    .iter()
                    .take(2)
                    .map(|a| match a {
                        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                        other => format!("{other:?}"),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Some((micros, args))
        })
        .collect();
    let calls: Vec<&(i64, Vec<String>)> = log
        .iter()
        .filter(|(_, args)| {
            args.first()
                .is_some_and(|a| a.eq_ignore_ascii_case("fcall"))
        })
        .collect();
    let longest = calls.iter().map(|(us, _)| *us).max().unwrap_or(0);
    let of = |name: &str| {
        calls
            .iter()
            .filter(|(_, a)| a.get(1).is_some_and(|f| f == name))
            .count()
    };
    println!(
        "| instances stored | due | activated | tick steps | tick took | Lua calls | longest call | loaded in |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {stored} | {due} | {} | {} | {:.0} ms | {} (meet_due {}, meet_tick {}) | {:.2} ms | {:.1} s |",
        report.activated.len(),
        report.steps,
        took.as_secs_f64() * 1000.0,
        calls.len(),
        of("meet_due"),
        of("meet_tick"),
        longest as f64 / 1000.0,
        loaded_in.as_secs_f64(),
    );
    Ok(())
}

/// Load public meetings 1..=count, each with one instance an hour long
/// from `from(meeting)`.
pub async fn load_one_instance_each(
    store: &Store,
    count: u64,
    from: impl Fn(u64) -> i64,
) -> Result<(), String> {
    let records = (1..=count).flat_map(|m| {
        let from = from(m);
        [
            Load::Meeting(Meeting {
                id: m,
                title: format!("meeting {m}"),
                description: String::new(),
                public: true,
            }),
            Load::Instance {
                id: InstanceId::new(m, 1),
                from,
                to: from + 3_600_000,
            },
        ]
    });
    let loaded = store.load(records).await.map_err(|e| e.to_string())?;
    if loaded.refused > 0 {
        return Err(format!("the load was refused: {:?}", loaded.first_refusal));
    }
    Ok(())
}
