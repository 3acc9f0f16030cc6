//! End to end on real services: the Ganeti simulator runs create, startup,
//! shutdown, reboot, remove and failing-create jobs -> `synnefo eventd`
//! publishes from its job queue -> RabbitMQ -> two `synnefo dispatcher`s
//! -> every VM's operstate in PostgreSQL is right (ERROR for the failed
//! creates, DESTROYED and deleted for the removed), nothing dead-lettered.

mod pipeline_support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_to_postgres_through_eventd_rabbitmq_and_two_dispatchers() {
    pipeline_support::end_to_end("pipeline_e2e", 6, false).await;
}
