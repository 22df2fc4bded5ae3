//! The floor: the least work Redis must do for each operation, as a
//! minimal Lua library of the bench's own (`meetingd_floor`), called
//! pipelined straight from the bench. No validation, no id sequence, no
//! replies to speak of: what is left is the Redis work an operation cannot
//! do without, and the cost of calling a function at all. Lists come back
//! packed into one string, as the library packs them for the daemon.
//! meetingd is measured against it.
//!
//! It reads the data meetingd stores (the active index, the audiences, the
//! participants, the chat) and writes keys of its own (`floor_present`,
//! `floor_events`, `floor_chat`), so it never disturbs the library's
//! sequence of ids. Since 0.3 every entry written is also published
//! (SPUBLISH on `floor_watch:<M/O>`, the entry's id, kind and user, and a
//! message's text), as the library must for WATCH: the floor does the
//! same work, so the ratios of 0.2's BENCHMARKS (a floor that did not
//! publish) are not comparable with later ones.
//!
//! `meetingd-bench floor-library` prints it, for
//! `scripts/callgrind-join-leave.sh` (instructions per call).

use std::time::Instant;

use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::drive::{Measure, Op, Span, World};

/// The library, FUNCTION LOAD REPLACE'd at the start of a run.
pub const LIBRARY: &str = r#"#!lua name=meetingd_floor
-- the running instance of meeting m, by the partition's active index
local function running(base, m)
  return redis.call('ZRANGE', base .. 'active', m, m, 'BYSCORE', 'LIMIT', 0, 1)[1]
end

redis.register_function('floor_join', function(keys, args)
  local base = string.match(keys[1], '^(meetingd:{p%d+}:)')
  local name = running(base, args[1])
  if not redis.call('ZSCORE', base .. 'audience:' .. args[1], args[3]) then
    return redis.error_reply('NOT_ALLOWED')
  end
  redis.call('ZADD', base .. 'floor_present:' .. name, args[4], args[2])
  local id = redis.call('XADD', base .. 'floor_events:' .. name, '*', 'u', args[2], 't', '1')
  redis.call('SPUBLISH', base .. 'floor_watch:' .. name, id .. ' 1 ' .. args[2])
  return id
end)

redis.register_function('floor_leave', function(keys, args)
  local base = string.match(keys[1], '^(meetingd:{p%d+}:)')
  local name = running(base, args[1])
  redis.call('ZREM', base .. 'floor_present:' .. name, args[2])
  local id = redis.call('XADD', base .. 'floor_events:' .. name, '*', 'u', args[2], 't', '2')
  redis.call('SPUBLISH', base .. 'floor_watch:' .. name, id .. ' 2 ' .. args[2])
  return id
end)

redis.register_function('floor_post', function(keys, args)
  local base = string.match(keys[1], '^(meetingd:{p%d+}:)')
  local name = running(base, args[1])
  if not redis.call('ZSCORE', base .. 'present:' .. name, args[2]) then
    return redis.error_reply('NOT_JOINED')
  end
  local id = redis.call('XADD', base .. 'floor_chat:' .. name, '*', 'u', args[2], 'text', args[3])
  redis.call('SPUBLISH', base .. 'floor_watch:' .. name, id .. ' m ' .. args[2] .. ' ' .. args[3])
  redis.call('XADD', base .. 'floor_chat:' .. name .. ':by:' .. args[2], id, 'u', args[2])
  return id
end)

redis.register_function{function_name = 'floor_messages', flags = {'no-writes'}, callback = function(keys, args)
  local base = string.match(keys[1], '^(meetingd:{p%d+}:)')
  local out = {}
  for i, e in ipairs(redis.call('XRANGE', base .. 'chat:' .. running(base, args[1]), '-', '+', 'COUNT', args[2])) do
    out[i] = e[1] .. ' ' .. e[2][2] .. '  ' .. #e[2][4] .. ' ' .. e[2][4]
  end
  return table.concat(out)
end}

redis.register_function{function_name = 'floor_participants', flags = {'no-writes'}, callback = function(keys, args)
  local base = string.match(keys[1], '^(meetingd:{p%d+}:)')
  return table.concat(redis.call('ZRANGE', base .. 'present:' .. running(base, args[1]), 0, args[2] - 1, 'WITHSCORES'), ' ')
end}

redis.register_function{function_name = 'floor_active', flags = {'no-writes'}, callback = function(keys, args)
  local base = string.match(keys[1], '^(meetingd:{p%d+}:)')
  local rows = {}
  for i, name in ipairs(redis.call('ZRANGE', keys[1], 0, -1)) do
    local m, o = string.match(name, '^(%d+)/(%d+)$')
    rows[i] = {
      redis.call('HMGET', base .. 'meeting:' .. m, 'title', 'description', 'public'),
      redis.call('HGET', base .. 'schedule:' .. m, o),
      redis.call('ZCARD', base .. 'present:' .. name),
    }
  end
  return rows
end}

redis.register_function{function_name = 'floor_attendance', flags = {'no-writes'}, callback = function(keys, args)
  local base = string.match(keys[1], '^(meetingd:{p%d+}:)')
  local rows = {}
  for i, name in ipairs(redis.call('ZRANGE', keys[1], 0, -1)) do
    local m = string.match(name, '^(%d+)/')
    rows[i] = {
      redis.call('HGET', base .. 'meeting:' .. m, 'title'),
      table.concat(redis.call('ZRANGE', base .. 'present:' .. name, 0, -1, 'WITHSCORES'), ' '),
    }
  end
  return rows
end}
"#;

/// Load the floor library into the Redis behind `conn`.
pub async fn load(conn: &mut MultiplexedConnection) -> Result<(), String> {
    let _: Value = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LIBRARY)
        .query_async(conn)
        .await
        .map_err(|e| format!("loading the floor library: {e}"))?;
    Ok(())
}

/// The floor's calls for one operation.
fn calls(world: &World, op: Op, connection: usize, slot: usize, pipe: &mut redis::Pipeline) {
    let instance = world.instance(connection);
    let key = world.keys.meeting(instance.meeting);
    let meeting = instance.meeting.to_string();
    let fcall = |pipe: &mut redis::Pipeline, function: &str, key: &str, args: &[String]| {
        pipe.cmd("FCALL").arg(function).arg(1).arg(key).arg(args);
    };
    match op {
        Op::JoinLeave => {
            let user = World::mover(connection, slot);
            let now = world.now.to_string();
            fcall(
                pipe,
                "floor_join",
                &key,
                &[meeting.clone(), user.to_string(), World::email(user), now],
            );
            fcall(pipe, "floor_leave", &key, &[meeting, user.to_string()]);
        }
        Op::Post => {
            let user = world.poster(connection, slot);
            fcall(
                pipe,
                "floor_post",
                &key,
                &[meeting, user.to_string(), crate::drive::TEXT.to_string()],
            );
        }
        Op::Messages => fcall(pipe, "floor_messages", &key, &[meeting, "50".into()]),
        Op::Participants => fcall(pipe, "floor_participants", &key, &[meeting, "100".into()]),
        Op::Active | Op::Attendance => {
            let function = if op == Op::Active {
                "floor_active"
            } else {
                "floor_attendance"
            };
            for partition in 0..world.keys.partitions() {
                fcall(
                    pipe,
                    function,
                    &meetingd::store::Keys::active(partition),
                    &[],
                );
            }
        }
    }
}

/// Drive the floor: one connection per client, `depth` operations' calls
/// in one pipeline at a time.
pub async fn drive(
    url: &str,
    world: World,
    mix: crate::drive::Mix,
    connections: usize,
    depth: usize,
    span: Span,
) -> Result<Measure, String> {
    let mut conns = Vec::new();
    for _ in 0..connections {
        conns.push(crate::connect_raw(url).await?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            tokio::spawn(async move {
                let mut measure = Measure::default();
                let mut picker = mix.picker(c);
                let mut done = 0u64;
                let deadline = Instant::now() + span.duration;
                while Instant::now() < deadline && span.count.is_none_or(|n| done < n) {
                    let ops: Vec<Op> = (0..depth).map(|_| picker.pick()).collect();
                    let mut pipe = redis::pipe();
                    for (slot, op) in ops.iter().enumerate() {
                        calls(&world, *op, c, slot, &mut pipe);
                    }
                    pipe.ignore_errors();
                    let sent = Instant::now();
                    match pipe.query_async::<Vec<Value>>(&mut conn).await {
                        Ok(replies) => {
                            for reply in replies {
                                if let Value::ServerError(err) = reply {
                                    measure.fail(format!("{err:?}"));
                                }
                            }
                        }
                        Err(err) => {
                            measure.fail(err.to_string());
                            return measure;
                        }
                    }
                    for op in ops {
                        measure.record(op, sent.elapsed());
                    }
                    done += depth as u64;
                }
                measure
            })
        })
        .collect();
    Ok(crate::drive::gather(tasks, started).await)
}
