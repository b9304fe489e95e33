#!/usr/bin/python3
"""Fill a GoChat database (sql/001_schema.sql) with a large, skewed data set.

Standard library only; all rows are generated inside PostgreSQL with
generate_series through psql, so the default size (200,000 users, ~6.5 M
follows, 1,000,000 posts) loads in a few minutes on 2 cores.

Data set:
  * users user1..userN, emails user<i>@example.test, created over the 60 days
    before the posts start. Their password_hash is a valid libscrypt MCF of a
    random, discarded password: nobody can log in as them.
  * K bench users bench1..benchK (ids N+1..N+K) whose password is known:
    either the hash of --bench-password (computed once here with
    hashlib.scrypt in libscrypt's "$s1$" format, N=16384 r=8 p=1 like
    workers/auth.c) or, with --hash-from-user NAME, the password_hash of a
    user registered through the API (POST /register), copied before --reset.
  * a skewed follow graph: each user follows a log-normal number of authors
    (mean --avg-follows), the authors drawn with a power law so low ids are
    popular (user2 ~ 1/4 of user1's followers, then a long tail). user1 (the
    "celebrity") is followed by exactly --celebrity-followers users; userN
    (the "heavy reader") follows exactly --heavy-follows authors; each bench
    user follows --bench-follows authors.
  * --posts posts, authors skewed by activity (low ids post most, user1
    ~1.7 %), created_at spread evenly over the last 30 days, ids increasing
    with created_at.

Usage:
  test/bench/seed.py --dsn postgresql://postgres@127.0.0.1:59432/postgres --reset
  test/bench/seed.py --dsn ... --reset --small          # CI: seconds
  test/bench/seed.py --dsn ... --reset --hash-from-user alice --bench-users 50

Without --reset the tables users, user_followers and posts must be empty.
Loading uses session_replication_role = replica (skips the foreign-key
triggers; the data is consistent by construction) when the role is a
superuser, and falls back to ordinary checked inserts otherwise.
"""

import argparse
import base64
import hashlib
import os
import subprocess
import sys
import time

# libscrypt MCF of 32 random bytes that were thrown away: valid, unusable.
LOCKED_HASH = ("$s1$0e0801$t9F8FJ6lyJx3cZymqWBv5w==$2r1hX1W0ma8oBFgPnG4VTAeWP8"
               "E6np225pxJt4QDZw0OoWYtBgFm/TAWjE/dtJ5q1HI9aorDh3aVzrxFFUlQaQ==")


def libscrypt_mcf(password):
    """The string libscrypt_hash(mcf, password, 16384, 8, 1) would give."""
    salt = os.urandom(16)
    h = hashlib.scrypt(password.encode(), salt=salt, n=16384, r=8, p=1,
                       dklen=64, maxmem=64 * 1024 * 1024)
    return "$s1$0e0801$%s$%s" % (base64.b64encode(salt).decode(),
                                 base64.b64encode(h).decode())


def lit(s):
    return "'" + s.replace("'", "''") + "'"


class DB:
    def __init__(self, dsn, psql, verbose):
        self.dsn, self.psql, self.verbose = dsn, psql, verbose

    def run(self, sql, capture=False):
        cmd = [self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn]
        if capture:
            cmd += ["-At"]
        if self.verbose:
            sys.stderr.write(sql + "\n")
        p = subprocess.run(cmd, input=sql, text=True,
                           stdout=subprocess.PIPE if capture else None)
        if p.returncode != 0:
            sys.exit("seed: psql failed (exit %d)" % p.returncode)
        return p.stdout.strip() if capture else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", default=os.environ.get(
        "GOCHAT_DSN", "postgresql://postgres@127.0.0.1:5432/gochat"),
        help="libpq URI (default $GOCHAT_DSN or %(default)s)")
    ap.add_argument("--psql", default="psql")
    ap.add_argument("--users", type=int, default=200000)
    ap.add_argument("--posts", type=int, default=1000000)
    ap.add_argument("--avg-follows", type=float, default=30.0)
    ap.add_argument("--celebrity-followers", type=int, default=100000)
    ap.add_argument("--heavy-follows", type=int, default=5000)
    ap.add_argument("--bench-users", type=int, default=0)
    ap.add_argument("--bench-follows", type=int, default=100)
    ap.add_argument("--bench-password", default="bench-pass-1234")
    ap.add_argument("--hash-from-user", metavar="USERNAME",
                    help="give bench users this existing user's password_hash")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=float, default=0.42,
                    help="setseed() value, for a repeatable data set")
    ap.add_argument("--small", action="store_true",
                    help="CI preset: 2,000 users, 20,000 posts")
    ap.add_argument("--reset", action="store_true",
                    help="TRUNCATE users (cascading to follows, posts, rooms, "
                         "messages) first")
    ap.add_argument("--no-analyze", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()

    if a.small:
        a.users, a.posts = 2000, 20000
        a.celebrity_followers = min(a.celebrity_followers, 1000)
        a.heavy_follows = min(a.heavy_follows, 500)
        if a.bench_users == 0:
            a.bench_users = 10
    n, k = a.users, a.bench_users
    total = n + k
    if n < 10 or a.posts < 1:
        sys.exit("seed: need at least 10 users and 1 post")
    a.celebrity_followers = min(a.celebrity_followers, total - 1)
    a.heavy_follows = min(a.heavy_follows, total - 1)
    a.bench_follows = min(a.bench_follows, total - 1)
    heavy = n  # userN

    db = DB(a.dsn, a.psql, a.verbose)
    t_all = time.monotonic()

    def phase(name, sql):
        t = time.monotonic()
        db.run(sql)
        print("%-22s %7.1f s" % (name, time.monotonic() - t), flush=True)

    su = db.run("SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                capture=True) == "t"
    pre = ("SET synchronous_commit = off; SET work_mem = '256MB';"
           " SET maintenance_work_mem = '256MB';"
           " SET max_parallel_workers_per_gather = 0;"
           " SELECT setseed(%s) \\g /dev/null\n" % a.seed)
    if su:
        pre += "SET session_replication_role = replica;\n"

    bench_hash = None
    if k:
        if a.hash_from_user:
            bench_hash = db.run(
                "SELECT password_hash FROM users WHERE lower(username) = "
                "lower(%s)" % lit(a.hash_from_user), capture=True)
            if not bench_hash:
                sys.exit("seed: no user %r to copy the hash from"
                         % a.hash_from_user)
        else:
            bench_hash = libscrypt_mcf(a.bench_password)

    if a.reset:
        phase("reset", "TRUNCATE users, user_followers, posts, rooms, "
              "messages RESTART IDENTITY CASCADE;")
    else:
        busy = db.run("SELECT (SELECT count(*) FROM (SELECT 1 FROM users "
                      "LIMIT 1) x) + (SELECT count(*) FROM (SELECT 1 FROM "
                      "posts LIMIT 1) y)", capture=True)
        if busy != "0":
            sys.exit("seed: the database already has users or posts; "
                     "use --reset")

    # Timeline: users join during the 60 days before the posts start.
    span = "interval '%d days'" % a.days
    t0 = "(now() - %s)" % span

    phase("users", pre + """
INSERT INTO users (id, username, email, password_hash, created_at)
OVERRIDING SYSTEM VALUE
SELECT i, 'user' || i, 'user' || i || '@example.test', %s,
       %s - interval '60 days' * (1 - i::float8 / %d)
FROM generate_series(1, %d) i;
""" % (lit(LOCKED_HASH), t0, n, n) + ("""
INSERT INTO users (id, username, email, password_hash, created_at)
OVERRIDING SYSTEM VALUE
SELECT %d + i, 'bench' || i, 'bench' || i || '@example.test', %s, %s
FROM generate_series(1, %d) i;
""" % (n, lit(bench_hash), t0, k) if k else "") + """
SELECT setval(pg_get_serial_sequence('users', 'id'), %d) \\g /dev/null
""" % total)

    # Follow graph. Targets: 2 + floor((total-1) * random()^2.5), i.e. a
    # power law over ids (user1 is left out of the random part and gets an
    # exact follower count below). Counts per follower: log-normal with
    # sigma 1 and the requested mean, capped at 2,000.
    import math
    mu = math.log(a.avg_follows) - 0.5
    target = "LEAST(%d, 2 + floor(%d * random() ^ 2.5)::bigint)" % (
        total, total - 1)
    phase("follows", pre + """
CREATE TEMP TABLE fcount AS
SELECT f, CASE
    WHEN f = %(heavy)d THEN %(hf)d
    WHEN f > %(n)d THEN %(bf)d
    ELSE LEAST(2000, GREATEST(1, round(exp(%(mu)f + sqrt(-2 * ln(1 - random()))
               * cos(2 * pi() * random())))))::int END AS c
FROM generate_series(1, %(total)d) f;
CREATE TEMP TABLE fedge AS
SELECT f, t FROM (
  -- draw ~1.6x as many as needed (duplicates collapse), then keep c each
  SELECT f, t, row_number() OVER (PARTITION BY f ORDER BY random()) AS rn, c
  FROM (SELECT DISTINCT fc.f, %(target)s AS t, fc.c
        FROM fcount fc, generate_series(1, (fc.c * 1.6)::int + 3) g) d
  WHERE t <> f
) x WHERE rn <= c
UNION
SELECT f, 1 FROM (SELECT f FROM generate_series(2, %(total)d) f
                  ORDER BY random() LIMIT %(cf)d) c;
INSERT INTO user_followers (follower_id, following_id, created_at)
SELECT e.f, e.t, GREATEST(uf.created_at, ut.created_at)
       + random() * interval '10 days'
FROM fedge e JOIN users uf ON uf.id = e.f JOIN users ut ON ut.id = e.t
ORDER BY e.f, e.t;
""" % dict(heavy=heavy, hf=a.heavy_follows, n=n, bf=a.bench_follows,
           mu=mu, total=total, target=target, cf=a.celebrity_followers))

    # Posts: author = 1 + floor(N * random()^3) (user1 ~1.7 % of all posts),
    # a few realistic sentences of 40..250 characters; ids follow time.
    phase("posts", pre + """
CREATE TEMP TABLE words AS SELECT array['the','a','new','today','just',
 'coffee','release','server','chat','build','weekend','music','great',
 'really','think','going','back','home','world','code','fast','slow',
 'postgres','feed','again','love','why','how','finally','meeting','news',
 'photo','check','this','out','more','later','friends','city','rain'] AS w;
INSERT INTO posts (id, user_id, content, created_at) OVERRIDING SYSTEM VALUE
SELECT i, 1 + floor(%(n)d * random() ^ 3)::bigint,
       'post ' || i || ': ' || (SELECT string_agg(ws.w[1 + floor(random() * 40)::int], ' ')
                   FROM words ws, generate_series(1, 6 + (i %% 35)) g),
       %(t0)s + %(span)s * (i::float8 / %(p)d)
FROM generate_series(1, %(p)d) i;
SELECT setval(pg_get_serial_sequence('posts', 'id'), %(p)d) \\g /dev/null
""" % dict(n=n, t0=t0, span=span, p=a.posts))

    if not a.no_analyze:
        phase("vacuum analyze", "VACUUM ANALYZE users; VACUUM ANALYZE "
              "user_followers; VACUUM ANALYZE posts;")

    stats = db.run("""
SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM user_followers),
       (SELECT count(*) FROM posts),
       (SELECT count(*) FROM user_followers WHERE following_id = 1),
       (SELECT count(*) FROM user_followers WHERE follower_id = %d),
       (SELECT count(*) FROM posts WHERE user_id = 1),
       (SELECT f FROM (SELECT follower_id f, count(*) c FROM user_followers
        WHERE follower_id <= %d GROUP BY 1) x ORDER BY abs(c - 100), f LIMIT 1)
""" % (heavy, n), capture=True).split("|")
    print("total %.1f s: %s users, %s follows, %s posts" %
          (time.monotonic() - t_all, stats[0], stats[1], stats[2]))
    print("celebrity: user1 (id 1), %s followers, %s posts" %
          (stats[3], stats[5]))
    print("heavy reader: user%d (id %d), follows %s" % (heavy, heavy,
                                                        stats[4]))
    print("typical reader (~100 follows): user%s (id %s)" % (stats[6],
                                                              stats[6]))
    if k:
        src = ("the password of %s" % a.hash_from_user if a.hash_from_user
               else repr(a.bench_password))
        print("bench users: bench1..bench%d (ids %d..%d), password %s"
              % (k, n + 1, total, src))


if __name__ == "__main__":
    main()
