# The base of a kind node image, built offline (hack/kind/node-image.sh): what kind's own
# images/base/Dockerfile (kind v0.33.0) makes, from Debian's packages and binaries built from the Go
# module proxy instead of git clones and release downloads. The build context holds kind's own files
# (images/base/files of the kind module: entrypoint, systemd units, containerd config), our containerd,
# ctr, containerd-shim-runc-v2 and crictl (bin/) and the CNI plugins (cni/).
ARG BASE_IMAGE=lft/base:bookworm
FROM ${BASE_IMAGE}
COPY files/ /
COPY bin/ /usr/local/bin/
COPY cni/ /opt/cni/bin/
COPY runc-wrapper.sh /usr/local/sbin/runc
# Packages as kind's base installs them (runc from Debian instead of a source build).
# Then two changes for these machines, where writing a negative oom_score_adj fails with EIO: systemd
# refuses to start a unit whose OOMScoreAdjust it cannot set, so those lines go; containerd clamps the
# kubelet's requests (-998 for a sandbox) to its own score (restrict_oom_score_adj, kind's rootless setting).
# runc goes through hack/runc-wrapper.sh, the host's own (CAP_SYS_RESOURCE, which these machines lack, dropped
# from specs; oomScoreAdj clamped to 0, which restrict_oom_score_adj gives here too).
# The pod sandbox is our pause image (tests/cluster/pause-image.sh), under its own name.
RUN set -eux; \
    chmod 0755 /usr/local/bin/* /usr/local/sbin/runc /kind /kind/bin /kind/bin/* /opt/cni/bin/*; \
    apt-get update -q; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod libseccomp2 pigz \
      bash ca-certificates curl jq procps runc; \
    apt-get clean; rm -rf /var/lib/apt/lists/*; \
    find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete; \
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*; \
    echo "ReadKMsg=no" >> /etc/systemd/journald.conf; \
    ln -sf /usr/lib/systemd/systemd /sbin/init; \
    grep -rl '^OOMScoreAdjust=-' /lib/systemd/system /etc/systemd/system | xargs -r sed -i '/^OOMScoreAdjust=-/d'; \
    sed -i -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' \
      -e 's#sandbox_image = .*#sandbox_image = "docker.io/lft/pause:1"#' /etc/containerd/config.toml; \
    systemctl enable kubelet.service containerd.service undo-mount-hacks.service; \
    systemctl mask systemd-binfmt.service; \
    mkdir -p /etc/kubernetes/manifests; \
    ctr oci spec \
      | jq '.hooks.createContainer[.hooks.createContainer|length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
      | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json; \
    containerd --version; runc --version; crictl --version
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
