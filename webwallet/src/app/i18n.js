// English and Simplified Chinese, chosen from the browser's languages (navigator.languages).
const EN = {
  loading: 'Opening the wallet…', tab_code: 'Pay code', tab_wallet: 'Wallet', tab_scan: 'Scan',
  online: 'online', offline: 'offline',
  enroll_title: 'Set up this phone', enroll_intro: 'Sign in once. Afterwards this phone makes payment codes with no network.',
  user: 'User name', password: 'Password', pin_new: 'Payment PIN (6 digits)',
  pin_hint: 'Asked for payments above your password-free limit. Leave empty to keep the PIN you have.',
  enroll_button: 'Enroll this phone', enrolling: 'Enrolling…', enrolled: 'This phone is ready: it makes codes offline.',
  pin_bad: 'The payment PIN must be exactly 6 digits.',
  pin_weak: 'That PIN is among the first a thief would try (123456, 111111, 121212…): choose another.',
  lost_all: 'This browser removed the wallet’s stored data (browsers do this to save space, and Safari after 7 days unused unless the app is installed). Sign in to enroll again: the lost devices are revoked in the same step, so their codes stop working.',
  lost_part: 'Part of this wallet’s stored data is missing ({versions}). No code is made with what is left, so a code can never repeat. Sign in to enroll again: the lost devices are revoked in the same step.',
  other_web_devices: 'Your account has other web-wallet devices: {labels}. If they were this phone before its storage was cleared, revoke them.',
  revoke_them: 'Revoke them', revoked_n: 'Revoked {n} lost device(s).',
  brightness_hint: 'Turn the screen brightness up. Tap the code for a new one.',
  refresh_in: 'New code in {s} s', code_of: '{version} · code {counter} of this half-minute',
  unbind: 'Make codes for any shop', bound_to: 'Only for {name} ({merchant}{terminal})',
  counter_used: 'All codes of this half-minute are used: next in {s} s.',
  clock_behind: 'This phone’s clock is behind codes already shown: next code in {s} s.',
  clock_never: 'The clock was never checked with the server: connect once so codes are accepted.',
  clock_back: 'The phone’s clock was set back since the last check: connect to re-sync it.',
  clock_old: 'Last contact with the server was {d} days ago: connect to re-sync the clock.',
  v_qr: 'QR', v_qr2: 'QR (v2)', v_bar: 'Barcode',
  balance: 'Balance', refresh: 'Refresh', pending: 'Waiting for you', history: 'History', settings: 'This phone',
  resync: 'Re-sync the clock', devices: 'Devices', forget: 'Remove the wallet from this phone',
  forget_confirm: 'Remove the wallet from this phone? Its devices are revoked.',
  clock_line: 'Clock offset to the server: {o} s, checked {when}.', never: 'never',
  no_history: 'No payments yet.', refunded: 'refunded {amount}',
  status_succeeded: 'paid', status_pending_confirmation: 'waiting for your PIN', status_declined: 'declined',
  status_failed: 'failed', status_cancelled: 'cancelled', status_refunded: 'refunded',
  confirm: 'Confirm', decline: 'Decline', pin: 'Payment PIN', confirmed: 'Paid {amount} to {merchant}.',
  declined: 'Declined: nothing was paid.', confirm_by: 'confirm within {s} s',
  reenroll_advice: '{reason}. Move this phone to {version} now (no password).', reenroll_now: 'Re-enroll',
  reenrolled: 'This phone now uses {version}.',
  device_current: 'this phone', device_revoked: 'revoked', revoke: 'Revoke',
  scan_title: 'Scan a shop’s QR code', scan_camera: 'Use the camera', scan_photo: 'Choose a photo',
  scan_none: 'No QR code found in the picture.', scan_no_camera: 'No camera available: choose a photo instead.',
  verified: '{name}, {city} — verified', unsigned: 'Not signed by Paycode: do not pay unless you trust this QR.',
  unknown_key: 'Signed by a key this wallet does not know: connect to check it.',
  altered: 'This QR code was altered after Paycode signed it. Do not pay.',
  amount: 'Amount', pay: 'Pay', paid: 'Paid {amount} to {merchant}.', pin_required: 'Above your password-free limit: enter your payment PIN.',
  bind_code: 'Show a code for this shop only', not_collection: 'This QR code is not a shop’s Paycode QR.',
  server_unreachable: 'No connection to the Paycode server. Codes still work offline.',
  offline_title: 'Offline allowance', offline_take: 'Take offline allowance',
  offline_intro: 'Money set aside now for shops whose line is down later. Your PIN is asked once, here; what is not spent returns to your balance after expiry.',
  offline_none: 'No offline allowance on this phone.',
  offline_line: 'Offline: {left} left of {total}, {codes} codes, until {when}.',
  offline_taken: 'Offline allowance taken: {amount} until {when}.',
  offline_code: 'Offline code', online_codes: 'Online codes', offline_amount: 'Amount (optional)',
  server_code: 'Get a code from the server', server_code_note: 'Issued by the server — online. It pays once, for {s} s more.',
  server_code_fallback: 'This phone cannot make a code now ({reason}): this one was issued by the server, online.',
  server_code_expired: 'The server’s code has expired: tap for another (online).',
  v_offline: 'Offline QR', offline_code_line: 'Offline code · up to {amount} · valid {s} s · hold it close to the till',
  offline_code_expired: 'This offline code has expired: tap for a new one.',
  offline_tap: 'Tap for a new offline code.',
  offline_exhausted: 'The offline allowance has no room for this payment.',
  offline_limit: 'Above the offline limit per payment: pay a smaller amount or another way.',
  offline_expired: 'The offline allowance has expired: take a new one while online.',
  offline_no_currency: 'Load the balance first: the allowance is taken in its currency.',
  offline_return: 'Hand back now',
  offline_return_confirm: 'Hand back the offline allowance? Its offline codes stop working on this phone; what they did not spend returns to your balance.',
  offline_returned: '{back} back on your balance; {held} stays held for codes already made until their shops send them.',
  offline_return_waiting: 'A hand-back was not answered yet: tap “Hand back now” again while online.',
  error_generic: 'Something went wrong: {detail}',
};

const ZH = {
  loading: '正在打开钱包…', tab_code: '付款码', tab_wallet: '钱包', tab_scan: '扫一扫',
  online: '在线', offline: '离线',
  enroll_title: '设置本机', enroll_intro: '只需登录一次。之后本机无需网络即可生成付款码。',
  user: '用户名', password: '密码', pin_new: '支付密码（6 位数字）',
  pin_hint: '超过免密额度的付款需要输入。留空则保留现有支付密码。',
  enroll_button: '启用本机', enrolling: '正在启用…', enrolled: '本机已就绪：离线也能生成付款码。',
  pin_bad: '支付密码必须是 6 位数字。',
  pin_weak: '这个支付密码太容易被猜到（如 123456、111111、121212）：请换一个。',
  lost_all: '浏览器已删除钱包保存的数据（浏览器会为节省空间而清理；Safari 在 7 天未使用且未安装到主屏幕时也会清理）。请登录重新启用：丢失的设备会在同一步中注销，其付款码随即失效。',
  lost_part: '钱包保存的部分数据丢失（{versions}）。为确保付款码不会重复，剩余数据不再用于生成付款码。请登录重新启用：丢失的设备会在同一步中注销。',
  other_web_devices: '您的账户还有其他网页钱包设备：{labels}。如果它们是本机清除存储之前的设备，请注销。',
  revoke_them: '注销这些设备', revoked_n: '已注销 {n} 台丢失的设备。',
  brightness_hint: '请调高屏幕亮度。轻点付款码可刷新。',
  refresh_in: '{s} 秒后更新', code_of: '{version} · 本半分钟第 {counter} 个码',
  unbind: '生成适用于所有商户的付款码', bound_to: '仅限 {name}（{merchant}{terminal}）',
  counter_used: '本半分钟的付款码已用完：{s} 秒后可生成新码。',
  clock_behind: '本机时钟落后于已显示的付款码：{s} 秒后可生成新码。',
  clock_never: '尚未与服务器校准时钟：请联网一次，以确保付款码被接受。',
  clock_back: '上次校准后本机时钟被调回：请联网重新校准。',
  clock_old: '距上次连接服务器已 {d} 天：请联网校准时钟。',
  v_qr: '二维码', v_qr2: '二维码（v2）', v_bar: '条形码',
  balance: '余额', refresh: '刷新', pending: '待您确认', history: '账单', settings: '本机',
  resync: '重新校准时钟', devices: '设备', forget: '从本机移除钱包',
  forget_confirm: '从本机移除钱包？其设备将被注销。',
  clock_line: '与服务器的时钟偏差：{o} 秒，校准于 {when}。', never: '从未',
  no_history: '暂无付款。', refunded: '已退款 {amount}',
  status_succeeded: '已付款', status_pending_confirmation: '等待输入支付密码', status_declined: '已拒绝',
  status_failed: '失败', status_cancelled: '已取消', status_refunded: '已退款',
  confirm: '确认', decline: '拒绝', pin: '支付密码', confirmed: '已向 {merchant} 付款 {amount}。',
  declined: '已拒绝：未付款。', confirm_by: '请在 {s} 秒内确认',
  reenroll_advice: '{reason}。请立即将本机切换到 {version}（无需密码）。', reenroll_now: '重新启用',
  reenrolled: '本机现使用 {version}。',
  device_current: '本机', device_revoked: '已注销', revoke: '注销',
  scan_title: '扫描商户二维码', scan_camera: '使用相机', scan_photo: '选择照片',
  scan_none: '图片中未找到二维码。', scan_no_camera: '没有可用的相机：请选择照片。',
  verified: '{name}，{city} — 已验证', unsigned: '此二维码未经 Paycode 签名：除非您信任它，否则请勿付款。',
  unknown_key: '此二维码的签名密钥本钱包不认识：请联网核实。',
  altered: '此二维码在 Paycode 签名后被篡改。请勿付款。',
  amount: '金额', pay: '付款', paid: '已向 {merchant} 付款 {amount}。', pin_required: '超过免密额度：请输入支付密码。',
  bind_code: '生成仅限该商户的付款码', not_collection: '这不是商户的 Paycode 收款码。',
  server_unreachable: '无法连接 Paycode 服务器。付款码离线仍可使用。',
  offline_title: '离线额度', offline_take: '领取离线额度',
  offline_intro: '现在预留一笔钱，供日后商户网络中断时付款。只在这里输入一次支付密码；未用完的部分到期后退回余额。',
  offline_none: '本机没有离线额度。',
  offline_line: '离线：剩余 {left}（共 {total}），{codes} 个码，有效至 {when}。',
  offline_taken: '已领取离线额度：{amount}，有效至 {when}。',
  offline_code: '离线付款码', online_codes: '在线付款码', offline_amount: '金额（可选）',
  server_code: '向服务器获取付款码', server_code_note: '由服务器在线签发，只能使用一次，还剩 {s} 秒。',
  server_code_fallback: '本机现在无法生成付款码（{reason}）：此码由服务器在线签发。',
  server_code_expired: '服务器签发的付款码已过期：轻点获取新的（需联网）。',
  v_offline: '离线二维码', offline_code_line: '离线付款码 · 最多 {amount} · 有效 {s} 秒 · 请靠近收银台扫码',
  offline_code_expired: '此离线付款码已过期：轻点生成新码。',
  offline_tap: '轻点生成新的离线付款码。',
  offline_exhausted: '离线额度不足以支付这笔款项。',
  offline_limit: '超过离线单笔限额：请减少金额或换一种方式付款。',
  offline_expired: '离线额度已过期：请联网时重新领取。',
  offline_no_currency: '请先加载余额：离线额度以余额的币种领取。',
  offline_return: '立即退回',
  offline_return_confirm: '交还离线额度？本机的离线付款码将失效；未用完的金额退回余额。',
  offline_returned: '{back} 已退回余额；{held} 为已生成的付款码保留，直至商户提交。',
  offline_return_waiting: '退回尚未得到答复：请联网后再次轻点“立即退回”。',
  error_generic: '出错了：{detail}',
};

export function pickLanguage(languages) {
  for (const tag of languages || []) {
    const lower = String(tag).toLowerCase();
    if (lower.startsWith('zh')) return 'zh-CN';
    if (lower.startsWith('en')) return 'en';
  }
  return 'en';
}

export const LANGUAGE = pickLanguage(typeof navigator === 'undefined' ? [] : navigator.languages);
const TABLE = LANGUAGE === 'zh-CN' ? ZH : EN;

export function t(key, values = {}) {
  const template = TABLE[key] ?? EN[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (_, name) => (name in values ? String(values[name]) : `{${name}}`));
}

export function translatePage(root) {
  root.documentElement.lang = LANGUAGE;
  for (const element of root.querySelectorAll('[data-i18n]')) element.textContent = t(element.dataset.i18n);
}

export const TABLES = { en: EN, 'zh-CN': ZH };
