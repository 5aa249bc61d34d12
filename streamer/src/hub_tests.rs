//! The hub carrying out [`Control`]'s actions: publishers cut off through their tokens, pulls
//! started and stopped through the puller, playouts ended with their recording's last writes.

use slotcast_domain::contract::{CameraSource, CameraTransport, IngestMode, SlotKind};

use super::*;
use crate::config::Listener;
use crate::testing::{self, at};

/// A server clock the test moves by hand.
#[derive(Default)]
struct HandClock(Mutex<i64>);

impl HandClock {
    fn set(&self, s: i64) {
        *lock(&self.0) = s;
    }
}

impl Clock for HandClock {
    fn now(&self) -> DateTime<Utc> {
        at(*lock(&self.0))
    }
}

fn slot(id: &str, kind: SlotKind, revision: u32, ingest: IngestMode) -> SlotMessage {
    testing::slot(id, kind, revision, (100, 200), "k", ingest)
}

struct Rig {
    hub: Hub,
    clock: Arc<HandClock>,
    reports: mpsc::Receiver<IngestMessage>,
    disk: mpsc::Receiver<DiskBatch>,
}

fn rig(puller: Puller) -> Rig {
    let listener = Listener {
        carrier: "carrier-a".into(),
        addr: "127.0.0.1:0".parse().expect("an address"),
    };
    // Nothing is written: the disk queue is read by the test itself.
    let dir = std::env::temp_dir().join("slotcast-hub-tests");
    let config = StreamerConfig::new("s1", vec![listener], dir);
    let clock = Arc::new(HandClock::default());
    let (reports_tx, reports) = mpsc::channel(16);
    let (disk_tx, disk) = mpsc::channel(16);
    let hub = Hub::new(
        Arc::new(config),
        clock.clone(),
        reports_tx,
        disk_tx,
        puller,
        CancellationToken::new(),
    );
    Rig {
        hub,
        clock,
        reports,
        disk,
    }
}

fn no_pulls(
    _: Hub,
    _: String,
    _: Camera,
    _: PullHandle,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async {})
}

/// A pull that says it is connected, waits to be stopped, says why, and hangs up.
fn pull_until_stopped(
    hub: Hub,
    id: String,
    _: Camera,
    handle: PullHandle,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let report = |kind, reason| PullReport {
            kind,
            camera: "192.0.2.10:554".into(),
            codec: None,
            reason,
        };
        hub.report_pull(&id, report(IngestKind::Connected, None));
        handle.stop.cancelled().await;
        let why = handle.reason().map(str::to_string);
        hub.report_pull(&id, report(IngestKind::Disconnected, why));
        hub.pull_ended(&id);
    })
}

async fn next_report(reports: &mut mpsc::Receiver<IngestMessage>) -> IngestMessage {
    tokio::time::timeout(Duration::from_secs(10), reports.recv())
        .await
        .expect("a report within 10 s")
        .expect("the hub is alive")
}

#[tokio::test]
async fn a_closing_window_cuts_its_publisher_off_and_its_playout_ends_once_it_has_hung_up() {
    let Rig {
        hub,
        clock,
        mut reports,
        mut disk,
    } = rig(no_pulls);
    clock.set(150);
    let push = testing::pushed(&["carrier-a"]);
    let mut opened = slot("r1", SlotKind::Opened, 1, push);
    opened.title = Some("Morning news".into());
    hub.apply_slot(&opened);
    let publisher = hub.register_session(
        "carrier-a",
        "127.0.0.9:4000".parse().expect("addr"),
        slotcast_domain::contract::IngestProtocol::Rtsp,
    );
    let key = Credential::Key("k".into());
    hub.admit(&publisher, "r1", &key, Instant::now())
        .expect("admitted");
    let playout = hub
        .start_recording(&publisher, "r1", key, "H264")
        .expect("nobody else records");
    assert_eq!(next_report(&mut reports).await.kind, IngestKind::Connected);
    assert_eq!(hub.status("r1"), PlayoutState::Waiting);

    clock.set(200);
    hub.tick();
    assert!(publisher.cancel.is_cancelled());
    assert_eq!(publisher.reason(), Some("the window closed"));
    // Still publishing its last media: the playout goes on until the publisher hangs up.
    assert_eq!(playout.lock().state(), PlayoutState::Waiting);

    hub.end_session(publisher.id, "connection closed", false);
    let gone = next_report(&mut reports).await;
    assert_eq!(gone.kind, IngestKind::Disconnected);
    assert_eq!(gone.reason.as_deref(), Some("the window closed"));
    assert_eq!(playout.lock().state(), PlayoutState::Ended);
    assert_eq!(hub.status("r1"), PlayoutState::Ended);
    let last = disk.try_recv().expect("the recording's end is queued");
    assert!(
        matches!(last.writes.last(), Some(DiskWrite::End { playlist, .. }) if playlist.contains("#EXT-X-ENDLIST")),
        "{last:?}"
    );
    // The title is kept beside the recording, for its page once the slot is forgotten.
    assert!(
        matches!(&last.writes[..], [DiskWrite::Title { title }, .., DiskWrite::End { .. }] if title == "Morning news"),
        "{last:?}"
    );
}

#[tokio::test]
async fn a_camera_is_pulled_through_the_puller_and_stopped_with_the_reason() {
    let Rig {
        hub,
        clock,
        mut reports,
        ..
    } = rig(pull_until_stopped);
    clock.set(150);
    let camera = IngestMode::Pull(CameraSource {
        url: "rtsp://192.0.2.10:554/stream".into(),
        transport: CameraTransport::Tcp,
        credentials: None,
    });
    hub.apply_slot(&slot("cam", SlotKind::Opened, 1, camera.clone()));
    let connected = next_report(&mut reports).await;
    assert_eq!(
        (connected.kind, connected.reservation_id.as_str()),
        (IngestKind::Connected, "cam")
    );
    // A tick inside the window starts no second pull.
    hub.tick();
    hub.apply_slot(&slot("cam", SlotKind::Cancelled, 2, camera));
    let stopped = next_report(&mut reports).await;
    assert_eq!(stopped.kind, IngestKind::Disconnected);
    assert_eq!(
        stopped.reason.as_deref(),
        Some("the reservation was cancelled")
    );
    hub.pulls_done(Duration::from_secs(10)).await;
    assert_eq!(hub.status("cam"), PlayoutState::Ended);
    assert!(reports.try_recv().is_err(), "one pull only");
}
