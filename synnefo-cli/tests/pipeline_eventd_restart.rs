//! The full pipeline (simulator -> eventd -> RabbitMQ -> two dispatchers ->
//! PostgreSQL) with eventd SIGKILLed while jobs run and started again only
//! after the jobs went on changing for a few seconds: on start it catches
//! up on what changed while it was down (Ganeti's seed FIXME: nothing may
//! be lost between two eventd runs), and no VM is lost or regressed.

mod pipeline_support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventd_killed_mid_stream_catches_up_and_loses_nothing() {
    pipeline_support::end_to_end_with(
        "pipeline_eventd_restart",
        6,
        pipeline_support::Disruption::EventdRestart,
    )
    .await;
}
