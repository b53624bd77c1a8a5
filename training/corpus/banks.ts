/**
 * Phrase banks for the training corpus (Simplified Chinese). Every bank is split by position:
 * entries at index % 5 === 4 are held out, so the held-out split contains phrasings and slot
 * values the model never saw in training.
 */
import type { Emotion } from '../../agents/turn.ts';

export const openers = [
  '', '你好，', '在吗？', '客服你好，', '喂，', '请问一下，', '麻烦问下，', '哎，', '您好，', '客服，',
  '问一下，', '那个，', '客服在吗，', '打扰一下，', '你好啊，',
];

/** `{dish}` marks where a dish name goes; a core without it mentions no dish. */
export const deliveryCores = [
  '我的外卖怎么还没到？', '外卖到哪了？', '我点的{dish}怎么还没送来', '骑手到哪了', '订单一直显示配送中，什么时候能到？',
  '帮我催一下单', '能不能快点送', '饭怎么还没到啊', '我的餐什么时候送到', '骑手是不是迷路了',
  '等好久了还没送到', '外卖送到哪儿了啊', '怎么还在路上', '超时了还没到', '什么时候能送到啊',
  '我的{dish}到哪了', '预计几点能到', '快点送过来好吗', '这单还要多久', '能帮我看看骑手位置吗',
  '{dish}还没到，怎么回事', '我点的外卖迟迟不到', '为什么还没送到', '骑手怎么还没来', '帮我查下外卖到哪了',
  '{dish}到底什么时候送到', '说好的时间早过了', '外卖还要等多久', '我的单子怎么还没送', '能催一下骑手吗',
  '外卖一直没到', '订单超时了还没送来', '{dish}送到哪了', '帮我问问骑手到哪了', '饭还没送到',
  '我的订单还在配送吗', '怎么这么久还没到', '骑手还有多久到', '请问我的外卖几点到', '{dish}怎么还在路上',
  '配送也太慢了吧', '外卖什么时候能到家', '我的{dish}还要多久', '能不能查一下配送进度', '点的餐迟迟没来',
]; // 50 cores

export const compensationCores = [
  '超时这么久有没有补偿？', '迟到了能赔点吗', '送这么慢不给个说法吗', '晚了这么久能退点钱吗', '超时了是不是应该补偿',
  '这么晚送到要给我补偿', '迟到这么久有红包吗', '能给个优惠券补偿一下吗', '超时赔付怎么算', '晚点了要赔偿',
  '送晚了怎么赔', '超时有没有赔付', '迟到了给我补个券', '晚了这么多得补偿我', '超时了能不能退部分钱',
];

export const humanCores = [
  '转人工', '我要找人工客服', '人工！', '别让机器人回答，找真人', '叫你们人工客服来',
  '给我转人工服务', '我不想跟机器人说话', '接人工', '有没有真人客服', '找个活人跟我说',
  '转接人工客服', '我要人工处理', '让真人来回答', '人工客服在哪', '帮我转人工吧',
];

export const greetingCores = ['你好', '在吗', '客服在吗', '有人吗', '您好', '哈喽', '你好呀', '在不在', 'hello', '嗨'];

export const thanksCores = [
  '好的谢谢', '知道了，谢谢', '行吧', '好的', '辛苦了', '收到', '好的，那我再等等', '明白了，谢谢你', '谢谢客服', '好吧，谢谢',
];

export const otherCores = [
  '你们几点下班', '怎么开发票', '会员怎么开通', '今天天气怎么样', '你是机器人吗',
  '怎么修改昵称', '积分怎么用', '能推荐个好吃的吗', '我想注销账号', '怎么绑定银行卡',
  '怎么领红包', '密码忘了怎么办', '怎么开通免密支付', '附近有什么好吃的', '你叫什么名字',
];

/** `{dur}` is a waited span; the whole clause is appended after a core. */
export const waitedClauses = ['我都等了{dur}了', '已经{dur}了', '等了快{dur}了', '过去{dur}了还没来', '足足等了{dur}', '整整{dur}了'];

/** A generated bank already divided into its training and held-out parts. */
export interface SplitBank<T> {
  train: T[];
  heldout: T[];
}

const chineseDigits = ['', '一', '二', '三', '四', '五', '六', '七', '八', '九'];

/** Writes 1..99 in Chinese numerals: 十五, 二十, 四十五. */
export function chineseNumber(n: number): string {
  const tens = Math.floor(n / 10);
  const ones = n % 10;
  if (tens === 0) return chineseDigits[ones]!;
  return `${tens === 1 ? '' : chineseDigits[tens]}十${chineseDigits[ones]}`;
}

/**
 * Waiting times a customer mentions. Numbers ending in 4 or 9 are held out, so the held-out
 * split requires the model to copy spans it never saw.
 */
export const waitedDurations: SplitBank<string> = (() => {
  const bank: SplitBank<string> = { train: [], heldout: [] };
  for (let n = 15; n <= 95; n++) {
    const part = n % 5 === 4 ? bank.heldout : bank.train;
    part.push(`${n}分钟`);
    if (n % 5 === 0 || n % 5 === 4) part.push(`${chineseNumber(n)}分钟`);
    if (n % 10 === 0) part.push(`${chineseNumber(n)}多分钟`, `${n}多分钟`);
  }
  bank.train.push('半小时', '一个小时', '快一个钟头', '一个多小时', '三刻钟', '一个半小时', '半个多小时', '两个小时');
  bank.heldout.push('半个小时', '一个多钟头', '快两个小时', '一小时');
  return bank;
})();

const dishFlavours = ['红烧', '香辣', '麻辣', '酸辣', '黑椒', '番茄', '蒜香', '招牌', '秘制', '葱油', '孜然', '咖喱', '照烧', '泡椒', '干煸', '糖醋', '椒盐', '鲜虾', '香菇', '卤肉'];
const dishBases = ['牛肉面', '鸡排饭', '炒饭', '米线', '饺子', '盖饭', '拌面', '汉堡', '披萨', '寿司', '炸鸡', '烤鱼', '馄饨', '凉皮', '煲仔饭', '肠粉', '烤串', '麻辣烫', '鸡腿饭', '三明治'];
const plainDishes = ['奶茶', '咖啡', '酸菜鱼', '煎饼果子', '小龙虾', '水果捞', '螺蛳粉', '沙拉', '宫保鸡丁', '黄焖鸡米饭', '杨枝甘露', '柠檬茶'];

/** Dish names: flavour × base, with one combination in five held out, plus plain names. */
export const dishes: SplitBank<string> = (() => {
  const bank: SplitBank<string> = { train: [], heldout: [] };
  dishFlavours.forEach((flavour, f) =>
    dishBases.forEach((base, b) => ((f + b) % 5 === 4 ? bank.heldout : bank.train).push(flavour + base)),
  );
  plainDishes.forEach((dish, i) => (i % 5 === 4 ? bank.heldout : bank.train).push(dish));
  return bank;
})();

export interface Tail {
  text: string;
  emotion: Emotion;
}

export const tails: Tail[] = [
  { text: '', emotion: 'calm' }, { text: '，谢谢', emotion: 'calm' }, { text: '，急死了', emotion: 'anxious' },
  { text: '，饿死了', emotion: 'anxious' }, { text: '，到底怎么回事！', emotion: 'angry' }, { text: '，麻烦快点', emotion: 'anxious' },
  { text: '，什么破服务', emotion: 'angry' }, { text: '，麻烦帮忙看看', emotion: 'calm' }, { text: '，我赶时间', emotion: 'anxious' },
  { text: '，太过分了！', emotion: 'angry' }, { text: '？', emotion: 'calm' }, { text: '，我要投诉！', emotion: 'angry' },
  { text: '，等得好着急', emotion: 'anxious' }, { text: '，辛苦', emotion: 'calm' }, { text: '，气死我了', emotion: 'angry' },
  { text: '，麻烦了', emotion: 'calm' }, { text: '，快饿晕了', emotion: 'anxious' }, { text: '，你们怎么搞的！', emotion: 'angry' },
  { text: '，谢谢啊', emotion: 'calm' }, { text: '，我下午还要上班', emotion: 'anxious' }, { text: '，差评！', emotion: 'angry' },
  { text: '，请尽快', emotion: 'anxious' }, { text: '，拜托了', emotion: 'calm' }, { text: '，真是无语了', emotion: 'angry' },
  { text: '，好急', emotion: 'anxious' },
];

/** Replies of the user-facing agent; `{name}` placeholders are reply slots filled from tool results. */
export const agentReplies = {
  askRider: [
    '已查到您的订单正在配送中，我马上联系骑手确认送达时间，请稍等。',
    '您的订单正在配送途中，我这就帮您联系骑手问一下，请稍候。',
    '订单已由骑手配送中，我现在联系骑手确认预计送达时间，请您稍等片刻。',
    '查到了，订单正在路上，我帮您问问骑手大概多久能到，请稍等。',
    '您好，订单正在配送，我立即联系骑手核实送达时间，请稍等。',
  ],
  stillAsking: [
    '正在帮您联系骑手确认送达时间，请再稍等一下。',
    '骑手那边正在确认中，有结果马上告诉您。',
    '已经在联系骑手了，请您稍候片刻。',
    '我正在等骑手回复，稍后第一时间告诉您。',
    '请稍等，正在向骑手确认送达时间。',
  ],
  etaWithCoupon: [
    '骑手反馈预计{eta_min}分钟后送达，比承诺时间晚了约{late_min}分钟，非常抱歉！已为您发放一张{coupon_yuan}元无门槛优惠券。',
    '非常抱歉让您久等了！骑手预计还需{eta_min}分钟送达。因订单超时，已补偿您{coupon_yuan}元优惠券，请在“我的-优惠券”查看。',
    '骑手说大约{eta_min}分钟就能送到。这单超时了约{late_min}分钟，给您发了{coupon_yuan}元优惠券作为补偿，抱歉！',
    '让您久等了，骑手预计{eta_min}分钟内送达。为表歉意，已向您的账户发放{coupon_yuan}元优惠券。',
    '已联系到骑手，预计{eta_min}分钟后送到。订单超时给您带来不便，已赠送{coupon_yuan}元优惠券，请查收。',
  ],
  etaOnly: [
    '骑手反馈预计{eta_min}分钟后送达，请您耐心等待。',
    '已联系到骑手，大约{eta_min}分钟就能送到，请留意电话。',
    '骑手预计还需{eta_min}分钟送达，感谢您的耐心。',
    '骑手说大概{eta_min}分钟到，请您保持电话畅通。',
    '已和骑手确认，预计{eta_min}分钟内送达，请稍候。',
  ],
  etaNotEligible: [
    '骑手预计{eta_min}分钟后送达，目前订单还未超出超时补偿标准，请您耐心等待。',
    '已联系骑手，预计{eta_min}分钟送到。订单暂未达到超时赔付条件，如送达超时我们会为您处理。',
    '骑手大约{eta_min}分钟后到。当前还在补偿标准以内，感谢理解。',
    '预计{eta_min}分钟后送达。现在订单还没有超时太多，暂不符合补偿条件，请谅解。',
    '骑手反馈还需{eta_min}分钟。订单目前不满足超时补偿条件，我们会持续关注。',
  ],
  etaCouponIssued: [
    '骑手预计{eta_min}分钟后送达，之前为您发放的{coupon_yuan}元优惠券已到账。',
    '骑手还需约{eta_min}分钟，超时补偿的{coupon_yuan}元优惠券已经发给您了。',
    '预计{eta_min}分钟送到，{coupon_yuan}元补偿券已在您的账户中，请查收。',
    '骑手大约{eta_min}分钟到，补偿的{coupon_yuan}元优惠券已经发放过了。',
    '已确认骑手预计{eta_min}分钟送达，您的{coupon_yuan}元补偿券已到账。',
  ],
  preparing: [
    '您的订单商家正在出餐中，出餐后会尽快安排骑手配送。',
    '订单还在商家制作中，做好后马上由骑手配送，请稍等。',
    '商家正在备餐，备好后骑手会第一时间取餐送达。',
    '查到订单正在出餐，稍后会由骑手为您配送。',
    '您的餐品商家正在准备中，请耐心等待。',
  ],
  delivered: [
    '系统显示您的订单已经送达，请您在门口或取餐点看一下。',
    '订单显示已送达，麻烦您查看一下门口或前台。',
    '这单已经送到了，请确认一下是否已取餐。',
    '订单状态为已送达，如未收到请告诉我，我帮您处理。',
    '显示骑手已送达，请在取餐点找一找。',
  ],
  cancelled: [
    '该订单已取消，如有疑问可以回复“转人工”。',
    '这个订单已经取消了，款项会原路退回。',
    '订单显示已取消，退款将原路返回您的账户。',
    '该订单为已取消状态，不会再配送了。',
    '订单已取消，如需重新下单请在首页操作。',
  ],
  handoff: [
    '好的，正在为您转接人工客服，请稍候。',
    '马上为您转接人工客服，请稍等。',
    '已为您转人工，客服稍后会接入。',
    '明白，这就帮您转接人工服务。',
    '好的，人工客服马上来，请稍候。',
  ],
  greeting: [
    '您好，我是智能客服，请问有什么可以帮您？',
    '您好！请问订单遇到什么问题了吗？',
    '在的，请问有什么可以帮您？',
    '您好，很高兴为您服务，请问需要什么帮助？',
    '您好，请说，我来帮您处理。',
  ],
  thanks: [
    '不客气，祝您用餐愉快！',
    '不客气，有问题随时找我。',
    '应该的，祝您生活愉快！',
    '好的，感谢您的耐心，祝您用餐愉快。',
    '不客气，再见！',
  ],
  other: [
    '抱歉，这个问题我暂时无法处理，您可以描述订单遇到的问题，或回复“转人工”。',
    '这个问题我还不太会，如需帮助请回复“转人工”。',
    '不好意思，我主要处理订单配送问题，其他问题可以回复“转人工”。',
    '抱歉没能理解，请问是订单配送方面的问题吗？',
    '这个我帮不上忙，您可以回复“转人工”咨询客服。',
  ],
};

export const riderAgentReplies = {
  askEta: [
    '您好，订单尾号{order_tail}的顾客在询问送达时间，请问您大概多久能送到？',
    '骑手师傅您好，尾号{order_tail}的订单顾客在催，请问预计几分钟送达？',
    '您好，顾客询问尾号{order_tail}订单的送达时间，麻烦告知大概还要多久。',
    '师傅辛苦了，尾号{order_tail}这单顾客在问什么时候到，您预计多久？',
    '您好，尾号{order_tail}订单的顾客着急了，请问还需要多长时间送达？',
  ],
  reAsk: [
    '理解，辛苦了！那大概还需要多久能送到呢？',
    '明白，注意安全！麻烦估计一下还要几分钟？',
    '辛苦了，请问预计多久能送达？',
    '好的，那您估计大概几分钟能到？',
    '了解，方便说一下预计送达时间吗？',
  ],
  ack: [
    '好的，收到，辛苦了，路上注意安全！',
    '好的，我转告顾客，辛苦了！',
    '收到，谢谢师傅，注意安全。',
    '明白了，辛苦您了！',
    '好的，感谢配合，路上慢点。',
  ],
};

/** `{eta}` is the time expression the rider-facing agent extracts as the `eta` entity. */
export const riderEtaSentences = [
  '马上到了，还有{eta}', '路上有点堵，大概{eta}能到', '{eta}内送到', '已经取到餐了，{eta}左右到', '快了快了，{eta}',
  '在路上了，预计{eta}', '前面还有一单，{eta}到', '大概{eta}吧', '{eta}就到', '正在赶过去，{eta}左右',
  '电梯太慢了，{eta}能送上去', '刚取餐，{eta}送到', '还有{eta}，不好意思', '估计{eta}能到', '离得不远了，{eta}',
];

/** Time expressions a rider gives; minutes ending in 4 or 9 are held out. */
export const riderEtaExpressions: SplitBank<string> = (() => {
  const bank: SplitBank<string> = { train: [], heldout: [] };
  for (let n = 1; n <= 45; n++) {
    const part = n % 5 === 4 ? bank.heldout : bank.train;
    part.push(`${n}分钟`, `${chineseNumber(n)}分钟`);
    if (n >= 5) part.push(`${n}分钟左右`);
  }
  bank.train.push('半小时', '半个小时', '一刻钟', '一个小时');
  bank.heldout.push('半小时左右', '一个钟头');
  return bank;
})();

export const riderDelaySentences = [
  '路上{reason}，我尽快', '{reason}了，不好意思', '这边{reason}，在想办法', '{reason}，会晚一点', '抱歉，{reason}',
  '刚才{reason}，马上处理好', '{reason}，稍等一下', '实在不好意思，{reason}', '遇到{reason}了', '{reason}，我加快速度',
];

export const riderDelayReasons = [
  '堵车', '下大雨', '电动车没电', '找不到地址', '商家出餐慢', '小区进不去', '电梯坏了', '车胎爆了', '顾客电话打不通', '单子太多',
  '路上出了点事故', '导航错了', '等红灯', '前面修路', '保安不让进',
];

export const riderDeliveredSentences = [
  '已经送到了', '刚放门口了', '已送达，放前台了', '送到了，顾客拿了', '已经交给顾客了',
  '放外卖柜了', '刚送完', '已经放门卫那了', '已经到了放门口', '送达了',
];

export const riderChitchat = ['你好', '什么事', '在骑车，稍等', '哪一单？', '嗯', '收到', '怎么了', '好的', '看到了', '我看一下'];

/** Simulated rider sentences; `{n}` is copied from the facts line. */
export const simRiderSentences = {
  normal: ['大概{n}分钟到', '还有{n}分钟左右', '{n}分钟内送到', '预计{n}分钟', '马上，{n}分钟'],
  traffic: ['路上有点堵，大概{n}分钟', '堵车了，还要{n}分钟左右', '前面堵着，{n}分钟能到', '有点堵，预计{n}分钟', '不好意思堵车，{n}分钟到'],
  near: ['快到了，{n}分钟', '在楼下了，{n}分钟上来', '马上到，还有{n}分钟', '附近了，{n}分钟', '离得很近，{n}分钟送到'],
  rain: ['下雨路滑，大概{n}分钟', '雨太大了，{n}分钟左右到', '下雨骑得慢，{n}分钟', '雨天不好走，预计{n}分钟', '淋着雨呢，{n}分钟到'],
};

export const simCustomerClosings: Record<Emotion, string[]> = {
  calm: ['好的，谢谢', '好的，辛苦了', '知道了，谢谢', '行，我再等等', '好的，麻烦了'],
  anxious: ['好吧，快点啊', '那我再等等', '好的，尽快啊', '行，麻烦催一下', '好，希望快点到'],
  angry: ['行吧，下次快点', '哼，算了', '好吧，真无语', '希望别再这样了', '知道了，服了'],
  happy: ['太好了，谢谢', '好的，谢谢你', '谢谢，辛苦了', '好嘞', '好的，感谢'],
};

/** Splits a bank by position into the part used for training and the held-out part. */
export function splitBank<T>(bank: readonly T[], heldOut: boolean): T[] {
  return bank.filter((_, index) => (index % 5 === 4) === heldOut);
}
