//! The Redis store's Lua scripts. Redis runs a script atomically, so each one checks the
//! store's history and the lease *and* writes in one step: nothing can slip between the
//! check and the write (a second manager, a FLUSHALL, a restart without persistence).
//!
//! Every script answers a list of strings, read back by `Reply::parse`:
//! `ok [id]`, `done` (this commit was applied before), `held <holder>`, `empty`, or
//! `diverged <id> <index> <commit>` (what the store holds instead).

use crate::StoreError;

/// Opens the cluster: takes the lease if free (or ours), and gives a store that never
/// held the cluster its identity (with `create`), or one written before identities an
/// identity.
/// KEYS: meta, lease. ARGV: holder, ttl ms, new id, create ("1"/"0").
pub const OPEN: &str = r"
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return {'held', holder} end
local id = redis.call('HGET', KEYS[1], 'id')
if not id then
  local index = redis.call('HGET', KEYS[1], 'index')
  if not index and ARGV[4] ~= '1' then return {'empty'} end
  id = ARGV[3]
  redis.call('HSET', KEYS[1], 'id', id)
  if not index then redis.call('HSET', KEYS[1], 'index', '0', 'commit', '0') end
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {'ok', id}
";

/// Renews the lease (taking it again if it ran out and nobody else took it), then says
/// whether the store still holds this cluster's history at the given head. The lease is
/// kept even when it does not: a manager waiting for an operator to reseed its store
/// must not let a second manager start an empty cluster on it meanwhile.
/// KEYS: meta, lease. ARGV: holder, ttl ms, id, index, commit.
pub const RENEW: &str = r"
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return {'held', holder} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
local m = redis.call('HMGET', KEYS[1], 'id', 'index', 'commit')
if m[1] ~= ARGV[3] or m[2] ~= ARGV[4] or (m[3] or '0') ~= ARGV[5] then
  return {'diverged', m[1] or '', m[2] or '', m[3] or ''}
end
return {'ok'}
";

/// Writes the ops that follow the fixed arguments, so the history check and the write
/// are one atomic step. Ops: `S key value` (SET), `D key` (DEL), `A set member` (SADD),
/// `R set member` (SREM), `H hash field value` (HSET), `X hash field` (HDEL). `valid`
/// reads them all first: Redis does not undo what a script wrote before it failed, so a
/// malformed list must be refused before the first write.
const APPLY_OPS: &str = r"
local arity = {S = 3, D = 2, A = 3, R = 3, H = 4, X = 3}
local function valid(i)
  while i <= #ARGV do
    local n = arity[ARGV[i]]
    if not n or i + n - 1 > #ARGV then return false end
    i = i + n
  end
  return true
end
local function apply(i)
  while i <= #ARGV do
    local op = ARGV[i]
    if op == 'S' then redis.call('SET', ARGV[i+1], ARGV[i+2])
    elseif op == 'D' then redis.call('DEL', ARGV[i+1])
    elseif op == 'A' then redis.call('SADD', ARGV[i+1], ARGV[i+2])
    elseif op == 'R' then redis.call('SREM', ARGV[i+1], ARGV[i+2])
    elseif op == 'H' then redis.call('HSET', ARGV[i+1], ARGV[i+2], ARGV[i+3])
    elseif op == 'X' then redis.call('HDEL', ARGV[i+1], ARGV[i+2]) end
    i = i + arity[op]
  end
end
";

/// A commit: applied if the store's head is `after` and the lease is ours (or free);
/// `done` if the head is already `next`. A store found diverged keeps the lease (see
/// `RENEW`).
/// KEYS: meta, lease. ARGV: holder, ttl ms, id, after index, after commit, next index,
/// next commit, then the ops.
pub fn commit() -> String {
    format!(
        "{APPLY_OPS}{}",
        r"
if not valid(8) then return redis.error_reply('mycluster: malformed store ops') end
local m = redis.call('HMGET', KEYS[1], 'id', 'index', 'commit')
if m[1] == ARGV[3] and m[2] == ARGV[6] and m[3] == ARGV[7] then return {'done'} end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return {'held', holder} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
if m[1] ~= ARGV[3] or m[2] ~= ARGV[4] or (m[3] or '0') ~= ARGV[5] then
  return {'diverged', m[1] or '', m[2] or '', m[3] or ''}
end
apply(8)
redis.call('HSET', KEYS[1], 'index', ARGV[6], 'commit', ARGV[7])
return {'ok'}
"
    )
}

/// Replaces the cluster's state (its services' keys, the services set, the tasks and
/// workers hashes and `meta`; nothing else under any prefix) with the ops, then sets
/// the identity and head: `mycluster store reseed` and `store copy`. Refused only if
/// another process holds the lease.
/// KEYS: meta, lease, services set, tasks, workers. ARGV: holder, ttl ms, id, index,
/// commit, the prefix of a service's key (`mycluster:<cluster>:services.`), then the ops.
pub fn replace() -> String {
    format!(
        "{APPLY_OPS}{}",
        r"
if not valid(7) then return redis.error_reply('mycluster: malformed store ops') end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return {'held', holder} end
for _, name in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  redis.call('DEL', ARGV[6] .. name)
end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4], KEYS[5])
apply(7)
redis.call('HSET', KEYS[1], 'id', ARGV[3], 'index', ARGV[4], 'commit', ARGV[5])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {'ok'}
"
    )
}

/// Deletes the lease if it still holds the given value: a holder letting go, or the
/// lease of a holder known to be gone (a crashed manager of this host) taken away.
/// KEYS: lease. ARGV: the holder.
pub const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return {'ok'}
";

/// What a script answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Done; with the cluster's identity for `OPEN`.
    Ok(Option<String>),
    /// This commit was applied before.
    Done,
    /// Another process holds the lease (its stored value).
    Held(String),
    /// The store holds nothing for the cluster.
    Empty,
    /// The store's identity and head are not the expected ones: what it holds instead.
    Diverged {
        id: String,
        index: String,
        commit: String,
    },
}

impl Reply {
    pub fn parse(values: Vec<String>) -> Result<Reply, StoreError> {
        let mut values = values.into_iter();
        let kind = values.next().unwrap_or_default();
        let mut next = || values.next().unwrap_or_default();
        Ok(match kind.as_str() {
            "ok" => Reply::Ok(Some(next()).filter(|id| !id.is_empty())),
            "done" => Reply::Done,
            "held" => Reply::Held(next()),
            "empty" => Reply::Empty,
            "diverged" => Reply::Diverged {
                id: next(),
                index: next(),
                commit: next(),
            },
            other => {
                return Err(StoreError::Unavailable(format!(
                    "unexpected answer from a store script: {other:?}"
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        let parse = |v: &[&str]| Reply::parse(v.iter().map(|s| s.to_string()).collect()).ok();
        assert_eq!(parse(&["ok", "abc"]), Some(Reply::Ok(Some("abc".into()))));
        assert_eq!(parse(&["ok"]), Some(Reply::Ok(None)));
        assert_eq!(parse(&["done"]), Some(Reply::Done));
        assert_eq!(parse(&["held", "{}"]), Some(Reply::Held("{}".into())));
        assert_eq!(parse(&["empty"]), Some(Reply::Empty));
        assert_eq!(
            parse(&["diverged", "", "", ""]),
            Some(Reply::Diverged {
                id: String::new(),
                index: String::new(),
                commit: String::new()
            })
        );
        assert_eq!(parse(&["what"]), None);
        assert_eq!(parse(&[]), None);
    }
}
