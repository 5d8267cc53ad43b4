fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes from Debian's protobuf-compiler (scripts/setup.sh).
    tonic_build::configure().build_client(true).build_server(true).compile_protos(&["proto/deviceplugin.proto"], &["proto"])?;
    Ok(())
}
