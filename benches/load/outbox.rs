//! Outbox throughput: queue phase cards in one transaction, then let the
//! shared delivery worker (`delivery::Worker` with the Slack deliverer)
//! post them to the fake Slack on 127.0.0.1 until the outbox is empty.
//! Once with the messages spread over 64 channels (lanes proceed side by
//! side) and once all in one channel (a lane delivers in order, one at a time).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tminus::chat::{Destination, Outgoing};
use tminus::clock::{Clock, SystemClock};
use tminus::config::Secret;
use tminus::delivery::Worker;
use tminus::domain::{PersonId, Platform, Run};
use tminus::engine::{cards, Engine};
use tminus::slack::deliver::SlackDelivery;
use tminus::slack::{Slack, SlackSettings};
use tminus::store::Store;

use crate::fake::{Fake, SLACK_TOKEN};
use crate::procs::{loadavg, self_cpu};
use crate::report::{ms, Report};
use crate::setup::{BenchConfig, Db, Sizes};

pub async fn run(
    db: &Db,
    cfg: &BenchConfig,
    fake: &Fake,
    sizes: &Sizes,
    report: &mut Report,
) -> Result<()> {
    let name = db.kind.name();
    let config = cfg.config.clone();
    let store = Store::connect(&db.url).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let engine = Engine::new(store.clone(), config.clone(), clock.clone());
    let slack = Slack::new(
        engine.clone(),
        SlackSettings {
            bot_token: Secret::new(SLACK_TOKEN.into()),
            signing_secret: None,
            app_token: None,
            api_url: fake.slack_api_url(),
        },
    )?;
    let worker = Worker::new(engine.clone(), Arc::new(SlackDelivery::new(slack)));
    // A real card: the bench runbook's first phase, as a click would redraw it.
    let runbook = &config.runbooks["bench"];
    let run = Run::start(
        runbook,
        Platform::Slack,
        "C0BENCH",
        "outbox",
        "v1",
        "production",
        &PersonId::new("alice"),
        clock.now(),
    );
    let card = cards::phase_card(&run, runbook, &runbook.phases[0], &config.directory);

    println!("\n### Outbox, {name} (load {})\n", loadavg());
    println!("| lanes | messages | Slack API calls | seconds | messages per second | CPU ms per message (incl. fake Slack) |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for lanes in [64, 1] {
        let m = sizes.outbox_messages;
        let mut tx = store.begin().await?;
        for i in 0..m {
            let msg = Outgoing {
                platform: Platform::Slack,
                to: Destination::Channel {
                    channel: format!("C0LANE{:02}", i % lanes),
                },
                key: None,
                card: card.clone(),
            };
            tx.enqueue(None, &msg, clock.now()).await?;
        }
        tx.commit().await?;
        let calls0 = fake.slack_messages();
        let cpu0 = self_cpu();
        let t = Instant::now();
        loop {
            if worker.step().await? == 0 {
                if store.outbox_depth().await? == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if t.elapsed() > Duration::from_secs(300) {
                bail!("the outbox did not drain within 5 minutes");
            }
        }
        let wall = t.elapsed();
        let cpu = self_cpu().saturating_sub(cpu0);
        let calls = fake.slack_messages() - calls0;
        let rate = m as f64 / wall.as_secs_f64();
        println!(
            "| {lanes} | {m} | {calls} | {:.2} | {rate:.0} | {:.2} |",
            wall.as_secs_f64(),
            ms(cpu) / m as f64
        );
        report.add(
            format!("outbox messages per second, {lanes} lanes"),
            db.kind,
            rate,
            "/s",
            None,
        );
    }
    let failed = store.failed_messages().await?;
    if !failed.is_empty() {
        report.note(format!(
            "{name}: {} outbox messages failed: {:?}",
            failed.len(),
            failed.first()
        ));
    }
    store.close().await;
    Ok(())
}
