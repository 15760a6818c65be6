# Debian packages the daemon's tests need beyond the base list.
# pulseaudio + pulseaudio-utils + libasound2-plugins: a virtual microphone for the PyAudio capture test;
# openssl: the test CA and certificates for the TLS test.
APT_PACKAGES += pulseaudio pulseaudio-utils libasound2-plugins alsa-utils openssl
