//! Writes a PostgreSQL transaction joins: statements whose answer nobody
//! reads (an audit row, a queued message, an item's new state) wait in the
//! transaction and go to the server as one statement — each a
//! data-modifying `WITH` part of it — with the transaction's next read or
//! its commit (`pg`). Each statement the server answers costs it a flush
//! of its answer to the socket, which BENCHMARKS.md shows is the largest
//! part of its work per request on this machine; three writes joined cost
//! one.
//!
//! The parts of one statement see the database as it was before it, not
//! each other's changes, and run in no promised order, so a batch holds
//! writes that cannot tell: at most one part per table. Plain inserts of
//! the same statement into one table (two audit rows, a root message and
//! its card) become one insert of several rows, which takes them in order,
//! so ids keep the order the rows were written in. A write that fits none
//! of this ends the batch, so the order of effects is always the order the
//! writes were made in.

use super::sql::Arg;

/// A write waiting to be sent.
struct Write {
    /// The statement as the caller wrote it.
    written: String,
    /// The statement to send: `written`, with the rows of later identical
    /// inserts added to its `VALUES`.
    sql: String,
    args: Vec<Arg>,
    table: String,
}

/// The writes of a transaction not sent yet.
#[derive(Default)]
pub(super) struct Batch {
    writes: Vec<Write>,
}

/// The table a write statement changes and whether it is an insert of one
/// row of values that more rows can be added to, or `None` for a statement
/// this batch does not take (it is run at once).
fn target(sql: &str) -> Option<(String, bool)> {
    let (table, insert) = if let Some(rest) = sql.strip_prefix("INSERT INTO ") {
        (rest, true)
    } else if let Some(rest) = sql.strip_prefix("UPDATE ") {
        (rest, false)
    } else if let Some(rest) = sql.strip_prefix("DELETE FROM ") {
        (rest, false)
    } else {
        return None;
    };
    let name: String = table
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() || sql.contains("RETURNING") {
        return None;
    }
    let appendable = insert
        && !sql.contains("ON CONFLICT")
        && sql.ends_with(')')
        && values(sql).is_some_and(|row| !row.contains(" SELECT "));
    Some((name, appendable))
}

/// The row of values an `INSERT … VALUES (…)` ends with.
fn values(sql: &str) -> Option<&str> {
    sql.rfind(" VALUES (")
        .map(|at| &sql[at + " VALUES ".len()..])
}

impl Batch {
    /// Whether `sql` can wait in a batch at all.
    pub(super) fn takes(sql: &str) -> bool {
        target(sql).is_some()
    }

    /// Whether `sql` may join the writes waiting now (see the module's
    /// comment); if not, they go first.
    pub(super) fn fits(&self, sql: &str) -> bool {
        let Some((table, appendable)) = target(sql) else {
            return false;
        };
        match self.writes.iter().find(|w| w.table == table) {
            None => true,
            Some(w) => appendable && w.written == sql,
        }
    }

    /// Add a write that [`Batch::fits`].
    pub(super) fn push(&mut self, sql: &str, args: &[Arg]) {
        let (table, _) = target(sql).expect("a write the batch takes");
        if let Some(w) = self.writes.iter_mut().find(|w| w.table == table) {
            let row = values(sql).expect("an insert of values");
            w.sql.push_str(", ");
            w.sql.push_str(&renumber(row, w.args.len()));
            w.args.extend(args.iter().cloned());
            return;
        }
        self.writes.push(Write {
            written: sql.to_string(),
            sql: sql.to_string(),
            args: args.to_vec(),
            table,
        });
    }

    /// Every waiting write as one statement and its arguments, emptying
    /// the batch: `WITH w1 AS (…), w2 AS (…) last`, each statement's `$N`
    /// renumbered after the arguments of those before it.
    pub(super) fn take(&mut self) -> Option<(String, Vec<Arg>)> {
        let mut writes = std::mem::take(&mut self.writes);
        let last = writes.pop()?;
        if writes.is_empty() {
            return Some((last.sql, last.args));
        }
        let mut sql = String::from("WITH ");
        let mut args = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("w{} AS (", i + 1));
            sql.push_str(&renumber(&w.sql, args.len()));
            sql.push(')');
            args.extend(w.args.iter().cloned());
        }
        sql.push(' ');
        sql.push_str(&renumber(&last.sql, args.len()));
        args.extend(last.args);
        Some((sql, args))
    }
}

/// `sql` with every `$N` outside a quoted string made `$(N + offset)`.
pub(super) fn renumber(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '\'' {
            quoted = !quoted;
        } else if c == '$' && !quoted {
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            match digits.parse::<usize>() {
                Ok(n) => out.push_str(&(n + offset).to_string()),
                Err(_) => out.push_str(&digits),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_become_one_statement_with_their_arguments_renumbered() {
        let mut batch = Batch::default();
        let item = "INSERT INTO run_items (run_id, item) VALUES ($1, $2) \
                    ON CONFLICT (run_id, item) DO UPDATE SET item = excluded.item";
        let audit = "INSERT INTO audit_log (run_id, detail) VALUES ($1, '$1 stays')";
        assert!(batch.fits(item));
        batch.push(item, &[1.into(), "a".into()]);
        assert!(batch.fits(audit));
        batch.push(audit, &[1.into()]);
        assert!(batch.fits(audit), "a second row of the same insert");
        batch.push(audit, &[2.into()]);
        let (sql, args) = batch.take().expect("a statement");
        assert_eq!(
            sql,
            "WITH w1 AS (INSERT INTO run_items (run_id, item) VALUES ($1, $2) \
             ON CONFLICT (run_id, item) DO UPDATE SET item = excluded.item) \
             INSERT INTO audit_log (run_id, detail) VALUES ($3, '$1 stays'), ($4, '$1 stays')"
        );
        assert_eq!(args.len(), 4);
        assert!(batch.take().is_none());
    }

    #[test]
    fn a_second_change_to_a_table_waits_for_the_next_batch() {
        let mut batch = Batch::default();
        let insert = "INSERT INTO outbox (payload) VALUES ($1)";
        let update = "UPDATE outbox SET payload = $1 WHERE id = $2";
        batch.push(insert, &["a".into()]);
        // The update might be meant for the row just inserted.
        assert!(!batch.fits(update));
        assert!(!batch.fits("INSERT INTO outbox (payload, note) VALUES ($1, $2)"));
        let upsert = "INSERT INTO timers (k) VALUES ($1) ON CONFLICT (k) DO NOTHING";
        assert!(batch.fits(upsert));
        batch.push(upsert, &["t".into()]);
        assert!(!batch.fits(upsert), "two upserts may touch one row");
        let mut other = Batch::default();
        other.push(update, &["b".into(), 1.into()]);
        assert!(
            !other.fits(insert),
            "an insert after an update of its table"
        );
        assert!(!other.fits(update));
        assert!(other.fits("DELETE FROM timers WHERE id = $1"));
    }

    #[test]
    fn statements_with_answers_or_other_shapes_are_not_taken() {
        assert!(!Batch::takes(
            "INSERT INTO runs (number) VALUES ($1) RETURNING id"
        ));
        assert!(!Batch::takes("SELECT 1"));
        assert!(!Batch::takes("WITH x AS (SELECT 1) DELETE FROM runs"));
        assert!(Batch::takes("DELETE FROM run_items WHERE run_id = $1"));
    }
}
