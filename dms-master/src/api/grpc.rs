//! The gRPC services as axum routes beside the REST API on one listener: replication, admin,
//! `grpc.health.v1` and server reflection.

use dms_common::pb;
use dms_common::pb::replication_server::ReplicationServer;

use crate::api::admin::AdminService;
use crate::replication::ReplicationService;

/// The gRPC services as axum routes (one per service path, no fallback), to merge with the REST
/// router on the same listener: replication, admin (`dms.v1.Admin`, when given),
/// `grpc.health.v1` and server reflection.
pub async fn grpc_router(
    service: ReplicationService,
    admin: Option<AdminService>,
) -> Result<axum::Router, tonic_reflection::server::Error> {
    use dms_common::pb::admin_server::AdminServer;
    use tonic::server::NamedService;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ReplicationServer<ReplicationService>>()
        .await;
    if admin.is_some() {
        health.set_serving::<AdminServer<AdminService>>().await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    fn path<S: NamedService>(_: &S) -> String {
        format!("/{}/{{*method}}", S::NAME)
    }
    let server = service.into_server();
    let mut router = axum::Router::new()
        .route_service(&path(&server), server)
        .route_service(&path(&health_service), health_service)
        .route_service(&path(&reflection), reflection);
    if let Some(admin) = admin {
        let admin = admin.into_server();
        router = router.route_service(&path(&admin), admin);
    }
    Ok(router)
}
