fn main() -> anyhow::Result<()> {
    anyhow::bail!("tcpstack: not implemented yet")
}
