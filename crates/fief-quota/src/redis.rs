//! Counters in Redis, shared by every replica. Each admission is one
//! script call (`EVALSHA`): the script reads Redis's own clock (`TIME`, so
//! replicas' clocks do not matter), checks every limit of every level the
//! same way `decide` does in memory, and writes all of them or none.
//! Concurrency slots and budget reservations are leases that expire after
//! `quotas.lease_secs`, so a replica that dies mid-request frees them.

use std::sync::RwLock;

use crate::resp::{Client, Reply};
use crate::{
    gcra::Gcra, level_status, Admitted, Ask, Held, Level, LevelRead, LevelStatus, Outcome,
    QuotaError, RateInfo, Refusal, Result, Settings, Window,
};
use fief_config::LimitKind;
use std::time::Duration;

const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local lease = ARGV[2]
local want = tonumber(ARGV[3])
local min = tonumber(ARGV[4])
local lease_us = tonumber(ARGV[5])
local grant = want
local seeds = {}
local reserved = {}
for i = 1, n do
  local k = (i - 1) * 5
  local a = 5 + (i - 1) * 6
  if want > 0 and tonumber(ARGV[a + 6]) >= 0 then
    local spent = redis.call('GET', KEYS[k + 4])
    if not spent then
      seeds[#seeds + 1] = i
    else
      local sum = 0
      local res = redis.call('HGETALL', KEYS[k + 5])
      for j = 1, #res, 2 do
        local amount, expiry = string.match(res[j + 1], '^(%d+):(%d+)$')
        if amount == nil or tonumber(expiry) < now then
          redis.call('HDEL', KEYS[k + 5], res[j])
        else
          sum = sum + tonumber(amount)
        end
      end
      reserved[i] = sum
      local left = tonumber(ARGV[a + 6]) - tonumber(spent) - sum
      if left < grant then grant = left end
    end
  end
end
if #seeds > 0 then
  local out = {2}
  for _, i in ipairs(seeds) do out[#out + 1] = i end
  return out
end
for i = 1, n do
  local a = 5 + (i - 1) * 6
  local limit = tonumber(ARGV[a + 6])
  if want > 0 and limit >= 0 and grant < math.max(min, 1) then
    local too_large = 0
    if min > limit then too_large = 1 end
    return {1, 4, i, -1, too_large}
  end
end
local out = {0, grant}
local rtat, ttat = {}, {}
for i = 1, n do
  local k = (i - 1) * 5
  local a = 5 + (i - 1) * 6
  local rows = {-1, -1, -1, -1}
  local ri, rt = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  if ri > 0 then
    local tat = tonumber(redis.call('GET', KEYS[k + 1]) or now)
    if tat < now then tat = now end
    local new = tat + ri
    if ri > rt + 0.5 then return {1, 1, i, -1, 1} end
    if new - now > rt + 0.5 then return {1, 1, i, new - now - rt, 0} end
    rtat[i] = new
    rows[1] = math.floor((rt - (new - now) + 0.5) / ri)
    rows[2] = new - now
  end
  local ti, tt = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  if ti > 0 and want > 0 then
    local tat = tonumber(redis.call('GET', KEYS[k + 2]) or now)
    if tat < now then tat = now end
    local new = tat + grant * ti
    if grant * ti > tt + 0.5 then return {1, 2, i, -1, 1} end
    if new - now > tt + 0.5 then return {1, 2, i, new - now - tt, 0} end
    ttat[i] = new
    rows[3] = math.floor((tt - (new - now) + 0.5) / ti)
    rows[4] = new - now
  end
  local c = tonumber(ARGV[a + 5])
  if c >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 3], '-inf', now)
    if redis.call('ZCARD', KEYS[k + 3]) >= c then return {1, 3, i, 1000000, 0} end
  end
  for _, v in ipairs(rows) do out[#out + 1] = v end
end
for i = 1, n do
  local k = (i - 1) * 5
  local a = 5 + (i - 1) * 6
  if rtat[i] then
    redis.call('SET', KEYS[k + 1], string.format('%.3f', rtat[i]), 'PX', math.ceil((rtat[i] - now) / 1000) + 1000)
  end
  if ttat[i] then
    redis.call('SET', KEYS[k + 2], string.format('%.3f', ttat[i]), 'PX', math.ceil((ttat[i] - now) / 1000) + 1000)
  end
  if tonumber(ARGV[a + 5]) >= 0 then
    redis.call('ZADD', KEYS[k + 3], now + lease_us, lease)
    redis.call('PEXPIRE', KEYS[k + 3], math.ceil(lease_us / 1000))
  end
  if want > 0 and tonumber(ARGV[a + 6]) >= 0 then
    redis.call('HSET', KEYS[k + 5], lease, string.format('%d:%d', grant, now + lease_us))
    redis.call('PEXPIRE', KEYS[k + 5], math.ceil(lease_us / 1000))
  end
end
return out
"#;

const SETTLE: &str = r#"
local n = tonumber(ARGV[1])
local lease = ARGV[2]
local used = tonumber(ARGV[3])
local reserved = tonumber(ARGV[4])
for i = 1, n do
  local k = (i - 1) * 4
  local a = 4 + (i - 1) * 3
  local ti = tonumber(ARGV[a + 1])
  if ti > 0 then
    local tat = redis.call('GET', KEYS[k + 1])
    if tat then
      local new = tonumber(tat) - (reserved - used) * ti
      redis.call('SET', KEYS[k + 1], string.format('%.3f', new), 'KEEPTTL')
    end
  end
  if ARGV[a + 2] == '1' then redis.call('ZREM', KEYS[k + 2], lease) end
  if ARGV[a + 3] == '1' then
    redis.call('HDEL', KEYS[k + 4], lease)
    -- A spend Redis lost (restart) is seeded again from the store.
    if redis.call('EXISTS', KEYS[k + 3]) == 1 then redis.call('INCRBY', KEYS[k + 3], used) end
  end
end
return 0
"#;

const STATUS: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {tostring(now)}
for i = 1, tonumber(ARGV[1]) do
  local k = (i - 1) * 5
  out[#out + 1] = redis.call('GET', KEYS[k + 1]) or ''
  out[#out + 1] = redis.call('GET', KEYS[k + 2]) or ''
  out[#out + 1] = tostring(redis.call('ZCOUNT', KEYS[k + 3], now, '+inf'))
  out[#out + 1] = redis.call('GET', KEYS[k + 4]) or ''
  local sum = 0
  local res = redis.call('HGETALL', KEYS[k + 5])
  for j = 2, #res, 2 do
    local amount, expiry = string.match(res[j], '^(%d+):(%d+)$')
    if amount and tonumber(expiry) >= now then sum = sum + tonumber(amount) end
  end
  out[#out + 1] = tostring(sum)
end
return out
"#;

/// A budget's month stays in Redis this long after it was seeded.
const SPENT_TTL_MS: &str = "3456000000"; // 40 days

struct Script {
    text: &'static str,
    sha: RwLock<Option<String>>,
}

pub(crate) struct Redis {
    client: Client,
    admit: Script,
    settle: Script,
    status: Script,
}

fn key(scope: &str, level: &str, kind: &str) -> String {
    // The hash tag keeps one tenant's keys on one node of a cluster.
    format!("fief:q:{{{scope}}}:{level}:{kind}")
}

/// A level's keys, in the order the admission and status scripts read
/// them: request rate, token rate, concurrency leases, the month's spend,
/// the month's reservations.
fn level_keys(scope: &str, level: &str, month: &str) -> [String; 5] {
    [
        key(scope, level, "r"),
        key(scope, level, "t"),
        key(scope, level, "c"),
        key(scope, level, &format!("s:{month}")),
        key(scope, level, &format!("b:{month}")),
    ]
}

fn interval(g: Option<Gcra>) -> (String, String) {
    match g {
        Some(g) => (format!("{:.6}", g.interval), format!("{:.3}", g.tolerance)),
        None => ("-1".into(), "-1".into()),
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-1".into(), |n| n.to_string())
}

fn bad_reply(r: &Reply) -> QuotaError {
    QuotaError::Unreachable(format!("unexpected reply from redis: {r:?}"))
}

impl Redis {
    pub(crate) fn new(config: &fief_config::RedisConfig) -> Result<Self> {
        let script = |text| Script {
            text,
            sha: RwLock::new(None),
        };
        Ok(Self {
            client: Client::new(
                &config.url,
                config.connections,
                Duration::from_millis(config.timeout_ms),
            )?,
            admit: script(ADMIT),
            settle: script(SETTLE),
            status: script(STATUS),
        })
    }

    /// Readiness: Redis answers `PING`.
    pub(crate) async fn ping(&self) -> Result<()> {
        match self.client.call(&[b"PING"]).await? {
            Reply::Status(s) if s == "PONG" => Ok(()),
            other => Err(bad_reply(&other)),
        }
    }

    pub(crate) fn round_trips(&self) -> u64 {
        self.client.round_trips()
    }

    /// `EVALSHA`, loading the script first when Redis does not have it
    /// (first use, or a Redis that restarted): one round trip when warm.
    async fn eval(&self, script: &Script, keys: &[String], args: &[String]) -> Result<Reply> {
        for _ in 0..2 {
            let known = script.sha.read().ok().and_then(|s| s.clone());
            let sha = match known {
                Some(sha) => sha,
                None => {
                    let reply = self
                        .client
                        .call(&[b"SCRIPT", b"LOAD", script.text.as_bytes()])
                        .await?;
                    let Reply::Bulk(sha) = reply else {
                        return Err(bad_reply(&reply));
                    };
                    let sha = String::from_utf8_lossy(&sha).into_owned();
                    if let Ok(mut slot) = script.sha.write() {
                        *slot = Some(sha.clone());
                    }
                    sha
                }
            };
            let count = keys.len().to_string();
            let mut argv: Vec<&[u8]> = vec![b"EVALSHA", sha.as_bytes(), count.as_bytes()];
            argv.extend(keys.iter().map(|k| k.as_bytes()));
            argv.extend(args.iter().map(|a| a.as_bytes()));
            match self.client.call(&argv).await? {
                Reply::Error(e) if e.starts_with("NOSCRIPT") => {
                    if let Ok(mut slot) = script.sha.write() {
                        *slot = None;
                    }
                }
                Reply::Error(e) => {
                    return Err(QuotaError::Unreachable(format!("redis script failed: {e}")))
                }
                reply => return Ok(reply),
            }
        }
        Err(QuotaError::Unreachable(
            "redis keeps forgetting the admission script".into(),
        ))
    }

    pub(crate) async fn admit(&self, ask: &Ask<'_>, s: &Settings) -> Result<Outcome> {
        let mut keys = Vec::with_capacity(ask.levels.len() * 5);
        let lease_us = s.lease.as_micros().to_string();
        let mut args = vec![
            ask.levels.len().to_string(),
            ask.lease.to_owned(),
            ask.tokens.to_string(),
            ask.min_tokens.to_string(),
            lease_us,
        ];
        for l in ask.levels {
            keys.extend(level_keys(ask.scope, &l.key, ask.month));
            let (ri, rt) = interval(s.rpm(&l.limits));
            let (ti, tt) = interval(s.tpm(&l.limits));
            args.extend([
                ri,
                rt,
                ti,
                tt,
                opt(l.limits.concurrent_requests),
                opt(l.limits.monthly_token_budget),
            ]);
        }
        let reply = self.eval(&self.admit, &keys, &args).await?;
        let Reply::Array(items) = &reply else {
            return Err(bad_reply(&reply));
        };
        let ints: Vec<i64> = items.iter().filter_map(Reply::int).collect();
        if ints.len() != items.len() || ints.is_empty() {
            return Err(bad_reply(&reply));
        }
        let level = |i: i64| (i.max(1) - 1) as usize;
        match ints[0] {
            2 => Ok(Outcome::NeedsSeed(
                ints[1..]
                    .iter()
                    .filter_map(|&i| ask.levels.get(level(i)).map(|l| l.key.clone()))
                    .collect(),
            )),
            1 if ints.len() == 5 => {
                let kind = match ints[1] {
                    1 => LimitKind::RequestsPerMinute,
                    2 => LimitKind::TokensPerMinute,
                    3 => LimitKind::ConcurrentRequests,
                    _ => LimitKind::MonthlyTokenBudget,
                };
                let i = level(ints[2]);
                let limit = ask
                    .levels
                    .get(i)
                    .and_then(|l| l.limits.get(kind))
                    .unwrap_or_default();
                Ok(Outcome::Refused(Refusal {
                    kind,
                    level: i,
                    limit,
                    wait: (ints[3] >= 0).then(|| Duration::from_micros(ints[3] as u64 + 1)),
                    too_large: ints[4] == 1,
                }))
            }
            0 if ints.len() == 2 + 4 * ask.levels.len() => {
                let tokens = ints[1].max(0) as u64;
                let mut rate = RateInfo::default();
                let mut writes = Vec::new();
                for (i, l) in ask.levels.iter().enumerate() {
                    let row = &ints[2 + 4 * i..6 + 4 * i];
                    let w = |limit: Option<u64>, rem: i64, reset: i64| {
                        let limit = limit?;
                        (rem >= 0).then(|| Window {
                            limit,
                            remaining: rem as u64,
                            reset: Duration::from_micros(reset.max(0) as u64),
                        })
                    };
                    if let Some(win) = w(l.limits.requests_per_minute, row[0], row[1]) {
                        RateInfo::keep(&mut rate.requests, win);
                    }
                    if let Some(win) = w(l.limits.tokens_per_minute, row[2], row[3]) {
                        RateInfo::keep(&mut rate.tokens, win);
                    }
                    writes.push(crate::LevelWrite {
                        rpm_tat: None,
                        tpm_tat: (row[2] >= 0).then_some(0.0),
                        concurrent: l.limits.concurrent_requests.is_some(),
                        budget: ask.tokens > 0 && l.limits.monthly_token_budget.is_some(),
                    });
                }
                Ok(Outcome::Admitted(Admitted {
                    tokens,
                    rate,
                    held: crate::held(ask, tokens, &writes, s),
                }))
            }
            _ => Err(bad_reply(&reply)),
        }
    }

    pub(crate) async fn seed(
        &self,
        scope: &str,
        level: &str,
        month: &str,
        spent: u64,
    ) -> Result<()> {
        let k = key(scope, level, &format!("s:{month}"));
        let v = spent.to_string();
        match self
            .client
            .call(&[
                b"SET",
                k.as_bytes(),
                v.as_bytes(),
                b"NX",
                b"PX",
                SPENT_TTL_MS.as_bytes(),
            ])
            .await?
        {
            Reply::Error(e) => Err(QuotaError::Unreachable(format!("redis: {e}"))),
            _ => Ok(()),
        }
    }

    pub(crate) async fn settle(&self, h: &Held, used: u64) -> Result<()> {
        if !h.holds_anything() {
            return Ok(());
        }
        let mut keys = Vec::new();
        let mut args = vec![
            h.levels.len().to_string(),
            h.lease.clone(),
            used.to_string(),
            h.reserved.to_string(),
        ];
        for l in &h.levels {
            keys.push(key(&h.scope, &l.key, "t"));
            keys.push(key(&h.scope, &l.key, "c"));
            keys.push(key(&h.scope, &l.key, &format!("s:{}", h.month)));
            keys.push(key(&h.scope, &l.key, &format!("b:{}", h.month)));
            args.push(interval(l.tpm).0);
            args.push(if l.concurrent { "1" } else { "0" }.into());
            args.push(if l.budget { "1" } else { "0" }.into());
        }
        self.eval(&self.settle, &keys, &args).await.map(|_| ())
    }

    pub(crate) async fn status(
        &self,
        scope: &str,
        levels: &[Level],
        month: &str,
        s: &Settings,
    ) -> Result<Vec<LevelStatus>> {
        let mut keys = Vec::new();
        for l in levels {
            keys.extend(level_keys(scope, &l.key, month));
        }
        let reply = self
            .eval(&self.status, &keys, &[levels.len().to_string()])
            .await?;
        let Reply::Array(items) = &reply else {
            return Err(bad_reply(&reply));
        };
        let text: Vec<String> = items
            .iter()
            .map(|r| match r {
                Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                Reply::Int(n) => n.to_string(),
                _ => String::new(),
            })
            .collect();
        if text.len() != 1 + 5 * levels.len() {
            return Err(bad_reply(&reply));
        }
        let now: f64 = text[0].parse().map_err(|_| bad_reply(&reply))?;
        Ok(levels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let row = &text[1 + 5 * i..6 + 5 * i];
                let num = |s: &str| s.parse::<f64>().ok();
                let read = LevelRead {
                    rpm_tat: num(&row[0]),
                    tpm_tat: num(&row[1]),
                    concurrent: row[2].parse().unwrap_or(0),
                    budget: row[3]
                        .parse::<u64>()
                        .ok()
                        .map(|spent| (spent, row[4].parse().unwrap_or(0))),
                };
                level_status(&l.limits, &read, now, s)
            })
            .collect())
    }
}
