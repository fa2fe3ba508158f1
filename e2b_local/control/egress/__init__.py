"""The egress proxy: the host side of sandbox connections that need transforms or a SOCKS5 tunnel."""
