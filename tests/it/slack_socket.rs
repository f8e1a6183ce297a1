//! Slack Socket Mode, end to end: the real `tminus serve` with an app-level
//! token and no signing secret, the fake Slack Web API answering
//! `apps.connections.open` with the address of a fake Socket Mode server
//! written here, and envelopes pushed over that WebSocket as Slack pushes
//! them — on SQLite and on PostgreSQL.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tminus::domain::Platform;
use tminus::store::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::fake_slack::{Call, FakeSlack, APP_TOKEN, BOT_TOKEN};
use crate::helpers::{all_dbs, config, ServeProcess, TestDb};

/// How long any one expected thing may take to happen.
const WAIT: Duration = Duration::from_secs(15);
/// Slack wants every envelope acknowledged within three seconds.
const ACK_DEADLINE: Duration = Duration::from_secs(3);
const ALICE: &str = "U0ALICE";
const APP_ID: &str = "A0APP";

/// What the bot did on one WebSocket connection.
#[derive(Debug)]
enum FromBot {
    Text(String),
    /// The connection ended: a close frame, or the stream ran out.
    Closed(String),
}

/// A fake Socket Mode endpoint: every WebSocket connection the bot opens
/// comes out of `next_conn`, in order.
struct FakeSocketServer {
    addr: SocketAddr,
    conns: mpsc::UnboundedReceiver<Conn>,
}

/// One accepted connection. Dropping it drops the TCP connection without a
/// close handshake, as a network failure would.
struct Conn {
    /// The path and query the bot asked for.
    path: String,
    sink: SplitSink<WebSocketStream<TcpStream>, Message>,
    frames: mpsc::UnboundedReceiver<FromBot>,
    _stop_reading: oneshot::Sender<()>,
}

impl FakeSocketServer {
    async fn start() -> FakeSocketServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Some(conn) = accept(tcp).await {
                        let _ = tx.send(conn);
                    }
                });
            }
        });
        FakeSocketServer { addr, conns }
    }

    /// A URL for `apps.connections.open` to hand out; `ticket` tells connections apart.
    fn url(&self, ticket: &str) -> String {
        format!("ws://{}/link/?ticket={ticket}&app_id={APP_ID}", self.addr)
    }

    async fn next_conn(&mut self, what: &str) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("the fake Socket Mode server stopped")
    }
}

// The handshake callback's error type is tungstenite's, not ours to shrink.
#[allow(clippy::result_large_err)]
async fn accept(tcp: TcpStream) -> Option<Conn> {
    let (path_tx, path_rx) = oneshot::channel();
    let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
        let _ = path_tx.send(req.uri().to_string());
        Ok(resp)
    })
    .await
    .ok()?;
    let path = path_rx.await.ok()?;
    let (sink, mut stream) = ws.split();
    let (frames_tx, frames) = mpsc::unbounded_channel();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    // Keep reading, so pings are answered and the bot's frames are seen.
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = &mut stop_rx => return,
            };
            let event = match next {
                Some(Ok(Message::Text(t))) => FromBot::Text(t.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    FromBot::Closed(format!("close frame {frame:?}"))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => FromBot::Closed(format!("error {e}")),
                None => FromBot::Closed("end of stream".into()),
            };
            let closed = matches!(event, FromBot::Closed(_));
            if frames_tx.send(event).is_err() || closed {
                // Hold the stream until the test lets go of the connection.
                let _ = stop_rx.await;
                return;
            }
        }
    });
    Some(Conn {
        path,
        sink,
        frames,
        _stop_reading: stop_tx,
    })
}

impl Conn {
    async fn send(&mut self, frame: &Value) {
        self.sink
            .send(Message::text(frame.to_string()))
            .await
            .expect("send a frame to the bot");
    }

    /// The next text frame from the bot, as JSON.
    async fn next_frame(&mut self, what: &str) -> Value {
        match tokio::time::timeout(WAIT, self.frames.recv()).await {
            Ok(Some(FromBot::Text(t))) => {
                serde_json::from_str(&t).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {t}"))
            }
            Ok(Some(FromBot::Closed(how))) => panic!("{what}: the bot closed the socket: {how}"),
            Ok(None) => panic!("{what}: the connection's reader stopped"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }

    /// Send an envelope and return the bot's acknowledgement, checking it
    /// names the envelope and came within Slack's three seconds.
    async fn round_trip(&mut self, envelope: &Value, what: &str) -> Value {
        let sent = Instant::now();
        self.send(envelope).await;
        let ack = self.next_frame(&format!("the ack of {what}")).await;
        let took = sent.elapsed();
        assert_eq!(
            ack["envelope_id"], envelope["envelope_id"],
            "{what}: ack {ack}"
        );
        assert!(
            took < ACK_DEADLINE,
            "{what}: acknowledged after {took:?}, Slack allows {ACK_DEADLINE:?}"
        );
        ack
    }

    /// Wait until the bot ends this connection.
    async fn closed_by_bot(&mut self, what: &str) -> String {
        match tokio::time::timeout(WAIT, self.frames.recv()).await {
            Ok(Some(FromBot::Closed(how))) => how,
            Ok(Some(FromBot::Text(t))) => panic!("{what}: unexpected frame {t}"),
            Ok(None) => "reader stopped".into(),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }

    /// Close from our side, as Slack does after a refresh.
    async fn close(&mut self) {
        let _ = self
            .sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "refresh".into(),
            })))
            .await;
    }
}

/// Slack's first frame on every connection.
fn hello() -> Value {
    json!({
        "type": "hello",
        "num_connections": 1,
        "debug_info": {"host": "applink-test-1", "build_number": 118, "approximate_connection_time": 18060},
        "connection_info": {"app_id": APP_ID}
    })
}

fn slash_command(envelope_id: &str, channel: &str, text: &str, trigger: &str) -> Value {
    json!({
        "envelope_id": envelope_id,
        "type": "slash_commands",
        "accepts_response_payload": true,
        "payload": {
            "token": "legacy-unused",
            "team_id": "T0TEAM",
            "team_domain": "tminus-test",
            "channel_id": channel,
            "channel_name": "deployments",
            "user_id": ALICE,
            "user_name": "alice",
            "command": "/deploy",
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": "https://hooks.slack.invalid/commands/T0TEAM/1/abc",
            "trigger_id": trigger
        }
    })
}

/// A click on the button of `card` (as the fake recorded its latest content)
/// whose label starts with `label`, in the thread `root_ts`. The message
/// carries the card's blocks, as Slack's does.
fn click(envelope_id: &str, card: &Call, root_ts: &str, label: &str, trigger: &str) -> Value {
    let (label, action_id) = card
        .buttons()
        .into_iter()
        .find(|(l, _)| l.starts_with(label))
        .unwrap_or_else(|| panic!("no button {label:?} on {:?}", card.buttons()));
    let channel = card.str("channel").unwrap();
    let ts = card.ts.as_deref().unwrap();
    let mut blocks = card.body["blocks"].clone();
    for (i, block) in blocks.as_array_mut().into_iter().flatten().enumerate() {
        if block.get("block_id").is_none() {
            block["block_id"] = format!("b{i}").into();
        }
    }
    let block_id = blocks
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| {
            b["elements"]
                .as_array()
                .is_some_and(|els| els.iter().any(|e| e["action_id"] == action_id))
        })
        .map(|b| b["block_id"].clone())
        .expect("the button is on the card");
    json!({
        "envelope_id": envelope_id,
        "type": "interactive",
        "accepts_response_payload": false,
        "payload": {
            "type": "block_actions",
            "user": {"id": ALICE, "username": "alice", "name": "alice", "team_id": "T0TEAM"},
            "api_app_id": APP_ID,
            "token": "legacy-unused",
            "team": {"id": "T0TEAM", "domain": "tminus-test"},
            "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false},
            "trigger_id": trigger,
            "channel": {"id": channel, "name": "deployments"},
            "message": {
                "type": "message", "bot_id": "B0BOT", "app_id": APP_ID, "user": "U0BOT", "team": "T0TEAM",
                "ts": ts, "thread_ts": root_ts, "text": card.str("text").unwrap_or_default(),
                "blocks": blocks
            },
            "state": {"values": {}},
            "response_url": "https://hooks.slack.invalid/actions/T0TEAM/1/abc",
            "actions": [{
                "type": "button", "action_id": action_id, "block_id": block_id,
                "text": {"type": "plain_text", "text": label, "emoji": true},
                "action_ts": "1700000100.000200"
            }]
        }
    })
}

fn mention(envelope_id: &str, channel: &str, thread_ts: &str) -> Value {
    json!({
        "envelope_id": envelope_id,
        "type": "events_api",
        "accepts_response_payload": false,
        "retry_attempt": 0,
        "retry_reason": "",
        "payload": {
            "token": "legacy-unused",
            "team_id": "T0TEAM",
            "api_app_id": APP_ID,
            "event": {
                "type": "app_mention", "user": ALICE, "text": "<@U0BOT> help",
                "ts": "1700000200.000100", "thread_ts": thread_ts, "channel": channel,
                "event_ts": "1700000200.000100"
            },
            "type": "event_callback",
            "event_id": "Ev0SOCKETMENTION",
            "event_time": 1700000200,
            "authorizations": [{"team_id": "T0TEAM", "user_id": "U0BOT", "is_bot": true, "is_enterprise_install": false}],
            "is_ext_shared_channel": false,
            "event_context": "4-socket-mode-test"
        }
    })
}

fn opens(calls: &[Call]) -> usize {
    calls
        .iter()
        .filter(|c| c.method == "apps.connections.open" && c.ok())
        .count()
}

/// The run's root message in `channel` and the phase card in its thread.
fn root_and_card(calls: &[Call], channel: &str) -> Option<(Call, Call)> {
    let root = calls.iter().find(|c| {
        c.method == "chat.postMessage"
            && c.ok()
            && c.str("channel") == Some(channel)
            && c.str("thread_ts").is_none()
    })?;
    let card = calls.iter().find(|c| {
        c.method == "chat.postMessage"
            && c.ok()
            && c.str("thread_ts") == root.ts.as_deref()
            && c.all_text().contains(" · Phase ")
    })?;
    Some((root.clone(), card.clone()))
}

/// Wait until the card `ts` has been edited to show `text`; its latest content.
async fn card_shows(fake: &FakeSlack, ts: &str, text: &str) -> Call {
    fake.wait_for(&format!("the card to show {text:?}"), |_| {
        fake.latest(ts)
            .is_some_and(|c| c.method == "chat.update" && c.all_text().contains(text))
    })
    .await;
    fake.latest(ts).unwrap()
}

async fn socket_mode_run(db: TestDb) {
    let kind = db.kind;
    let channel = config().channels["slack"].deployments.clone();
    let fake = FakeSlack::start().await;
    let mut sockets = FakeSocketServer::start().await;
    fake.set_ws_url(sockets.url("first"));
    let mut serve = ServeProcess::start(
        &db.url,
        &[
            ("SLACK_BOT_TOKEN", BOT_TOKEN.to_string()),
            ("SLACK_APP_TOKEN", APP_TOKEN.to_string()),
            ("SLACK_API_URL", fake.api_url()),
        ],
    );

    // The bot asks for a WebSocket URL with its app-level token and connects.
    let mut first = sockets.next_conn("the first connection").await;
    let calls = fake.calls();
    assert_eq!(opens(&calls), 1, "{kind}: {calls:?}");
    assert!(!fake.saw_a_bad_token(), "{kind}: the app token was sent");
    assert_eq!(first.path, format!("/link/?ticket=first&app_id={APP_ID}"));
    first.send(&hello()).await;

    // A slash command: acknowledged with the private answer as the payload.
    let ack = first
        .round_trip(
            &slash_command(
                "env-cmd-1",
                &channel,
                "start checkout-api v9.9.9 --runbook quickstart",
                "trigger-sock-cmd",
            ),
            "the slash command",
        )
        .await;
    let keys: Vec<&String> = ack.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["envelope_id", "payload"], "{kind}: {ack}");
    assert_eq!(
        ack["payload"]["response_type"], "ephemeral",
        "{kind}: {ack}"
    );
    assert!(
        ack["payload"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Started deployment #1 of checkout-api v9.9.9"),
        "{kind}: {ack}"
    );
    let blocks = ack["payload"]["blocks"].as_array().expect("blocks");
    assert!(
        !blocks.is_empty() && blocks.len() <= 50,
        "{kind}: {} blocks",
        blocks.len()
    );

    // The root message in the channel, the first phase card in its thread.
    let calls = fake
        .wait_for("the root message and the first card", |c| {
            root_and_card(c, &channel).is_some()
        })
        .await;
    let (root, card) = root_and_card(&calls, &channel).unwrap();
    let root_ts = root.ts.clone().unwrap();
    let card_ts = card.ts.clone().unwrap();
    assert!(
        root.all_text()
            .contains("checkout-api v9.9.9 — deployment #1, started by Alice Moreau"),
        "{kind}: {}",
        root.all_text()
    );
    assert!(card.all_text().contains("Phase 1 of 3: Prepare"), "{kind}");

    // A click: acknowledged bare, then the card is edited in place.
    let tests_done = click(
        "env-click-1",
        &card,
        &root_ts,
        "Done: Tests pass",
        "trigger-sock-click-1",
    );
    let ack = first.round_trip(&tests_done, "the first click").await;
    assert_eq!(ack, json!({"envelope_id": "env-click-1"}), "{kind}");
    let card = card_shows(
        &fake,
        &card_ts,
        "✅ Tests pass on the release commit — Alice Moreau",
    )
    .await;
    assert_eq!(card.str("ts"), Some(card_ts.as_str()), "{kind}");

    // Slack redelivers the same envelope: acknowledged again, counted once.
    let ack = first.round_trip(&tests_done, "the redelivered click").await;
    assert_eq!(ack, json!({"envelope_id": "env-click-1"}), "{kind}");
    let store = Store::connect(&db.url).await.unwrap();
    let run = store
        .run_by_number(Platform::Slack, &channel, 1)
        .await
        .unwrap()
        .expect("run #1");
    let done = |entries: &[tminus::store::AuditEntry]| {
        entries.iter().filter(|e| e.action == "item.done").count()
    };
    assert_eq!(
        done(&store.audit_for_run(run.id).await.unwrap()),
        1,
        "{kind}: the redelivery changed nothing"
    );

    // Slack asks for a refresh: the bot opens a new connection by itself,
    // and lets go of the old one.
    fake.set_ws_url(sockets.url("second"));
    first
        .send(&json!({
            "type": "disconnect",
            "reason": "refresh_requested",
            "debug_info": {"host": "applink-test-1"}
        }))
        .await;
    let mut second = sockets
        .next_conn("a new connection after the refresh")
        .await;
    assert_eq!(second.path, format!("/link/?ticket=second&app_id={APP_ID}"));
    assert_eq!(
        opens(&fake.calls()),
        2,
        "{kind}: apps.connections.open again"
    );
    let how = first.closed_by_bot("the old connection to end").await;
    assert!(how.starts_with("close frame"), "{kind}: {how}");
    first.close().await;
    drop(first);
    second.send(&hello()).await;

    // The new connection works.
    let ack = second
        .round_trip(
            &click(
                "env-click-2",
                &card,
                &root_ts,
                "Done: Release notes",
                "trigger-sock-click-2",
            ),
            "a click on the new connection",
        )
        .await;
    assert_eq!(ack, json!({"envelope_id": "env-click-2"}), "{kind}");
    let card = card_shows(&fake, &card_ts, "✅ Release notes written").await;
    assert!(
        card.all_text().contains("✅ Tests pass"),
        "{kind}: {}",
        card.all_text()
    );

    // The connection drops without a close handshake: the bot reconnects.
    fake.set_ws_url(sockets.url("third"));
    drop(second);
    let mut third = sockets.next_conn("a new connection after a drop").await;
    assert_eq!(opens(&fake.calls()), 3, "{kind}");
    third.send(&hello()).await;

    // An Events API envelope on it: a mention is answered in its thread.
    let help_text = |c: &Call| c.ok() && c.all_text().contains("/deploy start");
    let mut event = mention("env-event-1", &channel, &root_ts);
    let ack = third.round_trip(&event, "a mention").await;
    assert_eq!(ack, json!({"envelope_id": "env-event-1"}), "{kind}");
    let calls = fake
        .wait_for("the help answer", |c| c.iter().any(help_text))
        .await;
    let help = calls.iter().find(|c| help_text(c)).unwrap();
    assert_eq!(help.str("thread_ts"), Some(root_ts.as_str()), "{kind}");

    // A disconnect frame without `debug_info` (slack-morphism cannot parse
    // it), then Slack closes the socket: the bot reconnects on the close.
    fake.set_ws_url(sockets.url("fourth"));
    third
        .send(&json!({"type": "disconnect", "reason": "refresh_requested"}))
        .await;
    third.close().await;
    let mut fourth = sockets.next_conn("a new connection after a close").await;
    assert_eq!(opens(&fake.calls()), 4, "{kind}");
    drop(third);
    fourth.send(&hello()).await;

    // Slack redelivers the mention on the new connection: acknowledged,
    // answered once.
    event["retry_attempt"] = 1.into();
    event["retry_reason"] = "timeout".into();
    let ack = fourth.round_trip(&event, "the redelivered mention").await;
    assert_eq!(ack, json!({"envelope_id": "env-event-1"}), "{kind}");

    // Everything delivered; the database and the fake Slack agree.
    let deadline = Instant::now() + WAIT;
    while store.outbox_depth().await.unwrap() > 0 {
        assert!(
            Instant::now() < deadline,
            "{kind}: the outbox never emptied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = fake.calls();
    assert_eq!(
        calls.iter().filter(|c| help_text(c)).count(),
        1,
        "{kind}: the mention was answered once"
    );
    let entries = store.audit_for_run(run.id).await.unwrap();
    assert_eq!(done(&entries), 2, "{kind}: {entries:?}");
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.method == "chat.postMessage" && c.ok() && c.str("thread_ts").is_none())
            .count(),
        1,
        "{kind}: one root message"
    );
    assert_eq!(fake.violations(), Vec::<String>::new(), "{kind}");
    assert!(!fake.saw_a_bad_token(), "{kind}");
    serve.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_commands_clicks_and_reconnects() {
    for db in all_dbs().await {
        socket_mode_run(db).await;
    }
}
