fn main() -> anyhow::Result<()> {
    anyhow::bail!("xtask: not implemented yet")
}
