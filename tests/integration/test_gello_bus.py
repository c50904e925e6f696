"""The emulated bus as a Protocol 2.0 peer for the real dynamixel-sdk: every instruction it claims, the
control-table rules (read-only fields, EEPROM locked under torque), byte stuffing, a host CRC error, the
baud rate a servo listens at, and the turn count restarting on REBOOT."""

from __future__ import annotations

import time

import dynamixel_sdk as sdk
import numpy as np
import pytest

from mimic.teleop import dynamixel as dx
from mimic.teleop.emulated_bus import EmulatedDynamixelBus
from mimic.teleop.gello_calibration import example_calibration


@pytest.fixture
def bus_and_port(monkeypatch):
    # These tests check the protocol, not timing (test_gello_leader's rate test does that). The SDK waits
    # 2 x LATENCY_TIMER + 2 ms (~34 ms) for a reply; the emulator is a thread of this process and missed that
    # window on a machine whose cores were both training, which a servo never does.
    monkeypatch.setattr(sdk.port_handler, "LATENCY_TIMER", 100)
    bus = EmulatedDynamixelBus(example_calibration("ur5e", baudrate=1_000_000))
    port = sdk.PortHandler(bus.port)
    assert port.openPort() and port.setBaudRate(1_000_000)
    try:
        yield bus, port, sdk.PacketHandler(2.0)
    finally:
        port.closePort()
        bus.close()


def test_ping_read_write_and_control_table_rules(bus_and_port) -> None:
    bus, port, ph = bus_and_port
    assert ph.ping(port, 1) == (dx.MODEL_XL330_M288, 0, 0)
    assert ph.ping(port, 7)[0] == dx.MODEL_XL330_M077  # the trigger servo
    assert ph.ping(port, 42)[1] == sdk.COMM_RX_TIMEOUT
    found, result = ph.broadcastPing(port)
    assert result == 0 and sorted(found) == list(range(1, 8))
    assert ph.read1ByteTxRx(port, 3, 7) == (3, 0, 0)  # ID
    assert ph.write1ByteTxRx(port, 3, 65, 1) == (0, 0)  # LED
    assert ph.read1ByteTxRx(port, 3, 65)[0] == 1
    assert ph.write2ByteTxRx(port, 3, 0, 99)[1] == dx.ERR_ACCESS  # model number is read-only
    assert ph.write1ByteTxRx(port, 3, 64, 1) == (0, 0)  # torque on ...
    assert ph.write1ByteTxRx(port, 3, 11, 4)[1] == dx.ERR_ACCESS  # ... locks the EEPROM (operating mode)
    assert ph.read1ByteTxRx(port, 3, 11)[0] == 3
    assert ph.readTxRx(port, 3, 200, 4)[1:] == (0, dx.ERR_ACCESS)  # beyond the table


def test_sync_bulk_and_stuffing(bus_and_port) -> None:
    bus, port, ph = bus_and_port
    write = sdk.GroupSyncWrite(port, ph, 116, 4)  # goal position
    for sid in (1, 2):
        write.addParam(
            sid, list((0x00FDFFFF + sid).to_bytes(4, "little"))
        )  # FF FF FD inside: stuffed on the wire
    assert write.txPacket() == 0
    time.sleep(0.05)
    assert ph.read4ByteTxRx(port, 1, 116)[0] == 0x00FDFFFF + 1
    assert ph.read4ByteTxRx(port, 2, 116)[0] == 0x00FDFFFF + 2
    bulk = sdk.GroupBulkRead(port, ph)
    assert bulk.addParam(1, 116, 4) and bulk.addParam(4, 7, 1)
    assert bulk.txRxPacket() == 0
    assert bulk.getData(1, 116, 4) == 0x00FDFFFF + 1 and bulk.getData(4, 7, 1) == 4
    assert ph.regWriteTxRx(port, 5, 65, 1, [1]) == (0, 0)
    assert ph.read1ByteTxRx(port, 5, 65)[0] == 0  # registered, not yet applied
    ph.action(port, sdk.BROADCAST_ID)
    time.sleep(0.05)
    assert ph.read1ByteTxRx(port, 5, 65)[0] == 1


def test_host_crc_error_baud_and_reboot(bus_and_port) -> None:
    bus, port, ph = bus_and_port
    bad = bytearray(dx.instruction_packet(2, dx.PING))
    bad[-1] ^= 0x5A
    port.clearPort()
    port.writePort(bytes(bad))
    time.sleep(0.05)
    packet, _ = dx.parse_packet(bytearray(port.readPort(64)))
    assert packet is not None and packet.crc_ok and packet.servo_id == 2 and packet.params[0] == dx.ERR_CRC
    assert bus.crc_errors == 1

    # the turn count restarts within one revolution at reboot (what makes GELLO issue #19)
    bus.set_raw_angles({6: 3 * 6.2832 + 1.0})
    before = ph.read4ByteTxRx(port, 6, 132)[0]
    assert ph.reboot(port, 6) == (0, 0)
    after = ph.read4ByteTxRx(port, 6, 132)[0]
    assert 0 <= after < 4096 and (before - after) % 4096 == 0

    # a servo moved to 57,600 baud no longer hears a 1 Mbaud host
    assert ph.write1ByteTxRx(port, 4, 8, 1) == (0, 0)  # the reply still comes at the old rate
    assert ph.ping(port, 4)[1] == sdk.COMM_RX_TIMEOUT
    assert port.setBaudRate(57_600)
    assert ph.ping(port, 4)[1] == 0 and ph.ping(port, 1)[1] == sdk.COMM_RX_TIMEOUT
    bus.disconnect()
    with pytest.raises(Exception):  # noqa: B017 - pyserial / termios error: the adapter is gone
        ph.ping(port, 4)


def test_garbage_on_the_line_and_pty_tuning_are_tolerated(bus_and_port) -> None:
    bus, port, ph = bus_and_port
    rng = np.random.default_rng(0)
    for i in range(20):  # line noise (with stray header bytes) before a real instruction
        noise = bytes(rng.choice([0xFF, 0xFD, 0x00, 0x01, 0x55], size=int(rng.integers(1, 12))).tolist())
        if i == 0:
            noise = b"\xff\xff\xfd\x00\x01\x40\x00"  # a header claiming 64 bytes that never come
        port.clearPort()
        port.writePort(noise + dx.instruction_packet(3, dx.PING))
        deadline = time.monotonic() + 1.0
        buf = bytearray()
        while time.monotonic() < deadline:
            buf += port.readPort(64)
            packet, _ = dx.parse_packet(buf)
            if packet is not None:
                break
        assert packet is not None and packet.servo_id == 3 and packet.params[0] == 0
    # what a pty lacks (FTDI low-latency ioctl, sysfs latency_timer) is reported, never raised
    skipped = dx.tune_port_latency(bus.port, port.ser)
    assert any("low-latency" in s for s in skipped) and "sysfs latency_timer" in skipped


def test_alarm_sets_the_alert_bit_in_every_reply_until_reboot(bus_and_port) -> None:
    """A servo in alarm answers with error bit 0x80 in sync, fast sync and bulk replies and in PING; register 70
    holds the cause; REBOOT clears it (unless the cause persists)."""
    bus, port, ph = bus_and_port
    bus.alarm(3, 0x04)  # overheating
    assert ph.syncReadTx(port, 132, 4, [2, 3, 4], 3, False) == 0
    errors = {sid: ph.readRx(port, sid, 4)[2] for sid in (2, 3, 4)}
    assert errors == {2: 0, 3: dx.ERRBIT_ALERT, 4: 0}
    assert ph.syncReadTx(port, 132, 4, [2, 3], 2, True) == 0
    raw, result, _ = ph.fastSyncReadRx(port, sdk.BROADCAST_ID, 16)
    assert result == 0 and (raw[0], raw[1], raw[8], raw[9]) == (
        0,
        2,
        dx.ERRBIT_ALERT,
        3,
    )  # [err, id, data, crc]
    assert ph.bulkReadTx(port, [3, 70, 0, 1, 0], 5, False) == 0
    assert ph.readRx(port, 3, 1) == ([0x04], 0, dx.ERRBIT_ALERT)
    assert ph.ping(port, 3)[2] == dx.ERRBIT_ALERT
    assert ph.reboot(port, 3) == (0, dx.ERRBIT_ALERT)  # the reply goes out before the restart
    assert ph.read1ByteTxRx(port, 3, 70) == (0, 0, 0)
    bus.alarm(3, 0x20, persist=True)  # overload that is still there
    ph.reboot(port, 3)
    assert ph.read1ByteTxRx(port, 3, 70) == (0x20, 0, dx.ERRBIT_ALERT)
