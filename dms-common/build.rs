//! Compiles `proto/dms/v1/*.proto` with protox (a pure-Rust protobuf compiler), so the build needs
//! no system `protoc`, and writes the encoded descriptor set for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = [
        "dms/v1/types.proto",
        "dms/v1/replication.proto",
        "dms/v1/admin.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("dms_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // `dmsctl -o json` prints the messages as they are; enum fields by name.
        .type_attribute(".dms.v1", "#[derive(serde::Serialize)]")
        .field_attribute(
            ".dms.v1.Task.kind",
            "#[serde(serialize_with = \"crate::pb::serialize_task_kind\")]",
        )
        .field_attribute(
            ".dms.v1.Task.status",
            "#[serde(serialize_with = \"crate::pb::serialize_task_status\")]",
        )
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
