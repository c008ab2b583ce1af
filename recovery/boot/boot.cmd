# Intrustd A/B boot selection for U-Boot (compile: mkimage -A arm64 -T script
# -C none -d boot.cmd boot.scr). Makes the decision of
# intrust_recovery::boot::BootState::decide, which is the specification:
# - BOOT_ORDER: words A/B in order, others skipped; unset, empty or naming
#   no slot means "A B" (so there is no reset loop on a garbage order);
# - BOOT_x_LEFT: unset or empty means 3; else its leading decimal digits
#   (garbage means 0); values above 9 (never written) count as 9;
# - the first slot in the order with tries left loses one and boots;
# - if none has tries: both get 3 again, the env is saved, the board resets.
# The script writes BOOT_A_LEFT/BOOT_B_LEFT (and BOOT_ORDER only when it was
# empty) and passes "root=<slot's root> intrust.slot=A|B" to the kernel.
#
# Board settings (default environment, or setenv before `source`):
#   intrust_root_A, intrust_root_B      root= for each slot (required)
#   intrust_load_A, intrust_load_B      "interface dev:part" holding the kernel
#   intrust_kernel                      kernel path in it (default /boot/Image)
#   intrust_bootargs                    other kernel arguments
#   intrust_env_store                   "saveenv" (default) or "raw"
# For intrust_env_store=raw (a single-copy env on a raw partition, read and
# written by this script; for boards whose saveenv does not reach it):
#   intrust_env_iface, intrust_env_dev  e.g. "virtio", "0"  (`<iface> read`)
#   intrust_env_blk, intrust_env_blkcnt first block and block count (hex)
#   intrust_env_size                    env size in bytes (hex), as in fw_env.config
#   intrust_env_addr                    scratch RAM address (default ${loadaddr})
# Tests: intrust_dry_run=1 prints the decision and the kernel arguments
# instead of loading, booting or resetting (the env is still saved).

test -n "${intrust_env_store}" || setenv intrust_env_store saveenv
test -n "${intrust_env_addr}" || setenv intrust_env_addr ${loadaddr}
test -n "${intrust_kernel}" || setenv intrust_kernel /boot/Image

if test "${intrust_env_store}" = raw; then
  # Only the raw area counts: values left in U-Boot's own environment
  # must not stand in for an area that is unreadable or has a bad CRC.
  setenv BOOT_ORDER
  setenv BOOT_A_LEFT
  setenv BOOT_B_LEFT
  ${intrust_env_iface} dev ${intrust_env_dev}
  if ${intrust_env_iface} read ${intrust_env_addr} ${intrust_env_blk} ${intrust_env_blkcnt}; then
    # A copy with a bad CRC is not imported: the defaults below apply, as
    # the model reads an env with no valid copy as empty.
    env import -c ${intrust_env_addr} ${intrust_env_size} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
  fi
fi

# Order: keep it unless it names no slot.
setenv intrust_known
for s in ${BOOT_ORDER}; do
  if test "${s}" = A -o "${s}" = B; then setenv intrust_known 1; fi
done
if test -z "${BOOT_ORDER}"; then setenv BOOT_ORDER "A B"; fi
setenv intrust_order "${BOOT_ORDER}"
test -n "${intrust_known}" || setenv intrust_order "A B"

# Tries: default, then the leading decimal number, clamped to 9. `test`
# reads "0x5" as hex and "09" as octal; the model reads leading decimal
# digits ("0x5" is 0, "09" is 9). So the first word (leading spaces
# dropped, as the model does; a leading tab is not) gets a "1" in front,
# which `test` always reads as decimal: with L leading digits d, "1d" is
# 10^L + d, compared for L = 1..9 (longer digit strings read as 0). The
# recovery only ever writes 0..9; the rest is for hand-edited values.
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3
setenv intrust_va
setenv intrust_vb
for w in ${BOOT_A_LEFT}; do test -n "${intrust_va}" || setenv intrust_va "${w}"; done
for w in ${BOOT_B_LEFT}; do test -n "${intrust_vb}" || setenv intrust_vb "${w}"; done
setenv intrust_a 0
setenv intrust_b 0
for z in 1 10 100 1000 10000 100000 1000000 10000000 100000000; do
  for n in 1 2 3 4 5 6 7 8 9; do
    if test "1${intrust_va}" -eq "${z}${n}"; then setenv intrust_a ${n}; fi
    if test "1${intrust_vb}" -eq "${z}${n}"; then setenv intrust_b ${n}; fi
  done
  # L digits, 10 or more: between 10^L + 9 and 10^(L+1).
  if test "1${intrust_va}" -gt "${z}9" -a "1${intrust_va}" -lt "${z}00"; then setenv intrust_a 10; fi
  if test "1${intrust_vb}" -gt "${z}9" -a "1${intrust_vb}" -lt "${z}00"; then setenv intrust_b 10; fi
done
if test ${intrust_a} -gt 9; then setenv intrust_a 9; fi
if test ${intrust_b} -gt 9; then setenv intrust_b 9; fi

# Decide. One try used: n -> n-1 by table (setexpr would write hex).
setenv intrust_slot
for s in ${intrust_order}; do
  if test -n "${intrust_slot}"; then
    # a slot was chosen
  elif test "${s}" = A -a ${intrust_a} -gt 0; then
    setenv intrust_slot A
  elif test "${s}" = B -a ${intrust_b} -gt 0; then
    setenv intrust_slot B
  fi
done
for n in 1 2 3 4 5 6 7 8 9; do
  setexpr intrust_m ${n} - 1
  if test "${intrust_slot}" = A -a ${intrust_a} -eq ${n}; then setenv BOOT_A_LEFT ${intrust_m}; fi
  if test "${intrust_slot}" = B -a ${intrust_b} -eq ${n}; then setenv BOOT_B_LEFT ${intrust_m}; fi
done
if test "${intrust_slot}" != A; then setenv BOOT_A_LEFT ${intrust_a}; fi
if test "${intrust_slot}" != B; then setenv BOOT_B_LEFT ${intrust_b}; fi
if test -z "${intrust_slot}"; then
  echo "intrust: no slot has tries left; 3 tries each again, resetting"
  setenv BOOT_A_LEFT 3
  setenv BOOT_B_LEFT 3
fi

# Store the used try before booting anything.
if test "${intrust_env_store}" = raw; then
  env export -c -s ${intrust_env_size} ${intrust_env_addr} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
  ${intrust_env_iface} write ${intrust_env_addr} ${intrust_env_blk} ${intrust_env_blkcnt}
else
  saveenv
fi

if test -z "${intrust_slot}"; then
  if test "${intrust_dry_run}" = 1; then
    echo "intrust-decision reset"
  else
    reset
  fi
else
  echo "intrust: booting slot ${intrust_slot} (tries left: A=${BOOT_A_LEFT} B=${BOOT_B_LEFT})"
  if test "${intrust_slot}" = A; then
    setenv intrust_root "${intrust_root_A}"
    setenv intrust_load "${intrust_load_A}"
  else
    setenv intrust_root "${intrust_root_B}"
    setenv intrust_load "${intrust_load_B}"
  fi
  setenv bootargs "${intrust_bootargs} root=${intrust_root} intrust.slot=${intrust_slot}"
  if test "${intrust_dry_run}" = 1; then
    echo "intrust-decision boot ${intrust_slot}"
    echo "intrust-bootargs ${bootargs}"
  else
    load ${intrust_load} ${kernel_addr_r} ${intrust_kernel}
    booti ${kernel_addr_r} - ${fdtcontroladdr}
    echo "intrust: booting slot ${intrust_slot} failed; resetting (one try is used up)"
    reset
  fi
fi
