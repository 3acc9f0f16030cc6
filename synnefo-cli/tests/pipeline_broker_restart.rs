//! The full pipeline (simulator -> eventd -> RabbitMQ -> two dispatchers ->
//! PostgreSQL) with RabbitMQ stopped (`rabbitmqctl stop_app`) for a few
//! seconds while jobs run: eventd spools and replays, the dispatchers
//! reconnect, and no VM is lost or regressed. Needs root for rabbitmqctl;
//! the broker is started again however the test ends.

mod pipeline_support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing() {
    pipeline_support::end_to_end("pipeline_broker_restart", 6, true).await;
}
