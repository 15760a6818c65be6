# `make wheel`, `make deploy`, `make arm-check`. See the README, "Deploy to a Raspberry Pi".
#   make deploy HOST=pi@raspberrypi.local [ANSIBLE_ARGS="-e digitspot_mqtt_host=192.168.1.5"]
#   make deploy INVENTORY=deploy/inventory.yml [VAULT_PASSWORD_FILE=~/.digitspot-vault]
#   make arm-check       the edge package on aarch64 under qemu-user; digits must equal the x86 ones

# systemd-analyze (unit checks), sshd (loopback deployment test), qemu-user (ARM check), python3-seccomp
# + setpriv + bubblewrap (the sandbox approximation), and what the
# playbook installs on a device, so its apt task has nothing to do when the test deploys to this machine.
APT_PACKAGES += systemd openssh-server openssh-client qemu-user-static python3-apt \
	python3-venv python3-dev libsndfile1 alsa-utils libportaudio2 portaudio19-dev gcc libc6-dev make \
	python3-seccomp util-linux bubblewrap

DIST ?= dist
HOST ?=
INVENTORY ?=
ANSIBLE_ARGS ?=
VAULT_PASSWORD_FILE ?=
ARM_CACHE ?= cache/arm
ARM_COUNT ?= 60
DEPLOY_ENV := ANSIBLE_CONFIG=$(CURDIR)/deploy/ansible.cfg
# HOST=user@name -> inventory "name," with -u user; the play then targets that one host.
HOST_USER := $(if $(findstring @,$(HOST)),$(firstword $(subst @, ,$(HOST))))
HOST_NAME := $(lastword $(subst @, ,$(HOST)))

.PHONY: wheel deploy deploy-target arm-check
wheel: venv  ## build dist/digitspot-*.whl (+ constraints.txt) for make deploy
	@deploy/build_wheel.sh $(DIST) $(abspath $(PY))

deploy-target:
	@if [ -z "$(HOST)$(INVENTORY)" ]; then \
	  echo "usage: make deploy HOST=user@pi   or   make deploy INVENTORY=deploy/inventory.yml  (README: Deploy to a Raspberry Pi)"; \
	  exit 2; fi

deploy: deploy-target wheel  ## install/update the daemon on a Pi: HOST=user@pi or INVENTORY=deploy/inventory.yml
	$(DEPLOY_ENV) $(VENV)/bin/ansible-playbook deploy/playbook.yml \
	  $(if $(INVENTORY),-i $(INVENTORY),-i '$(HOST_NAME),' -e digitspot_hosts=all $(if $(HOST_USER),-u $(HOST_USER))) \
	  $(if $(VAULT_PASSWORD_FILE),--vault-password-file $(VAULT_PASSWORD_FILE)) $(ANSIBLE_ARGS)

arm-check: wheel  ## run the edge package on aarch64 (qemu-user) on FSDD test takes; must equal x86 digits
	$(PY) deploy/arm_check.py --cache $(ARM_CACHE) --count $(ARM_COUNT) --wheel $$(ls $(DIST)/digitspot-*.whl)
