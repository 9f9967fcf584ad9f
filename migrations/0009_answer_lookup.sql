-- Learning asks "does a live entry already give exactly this answer?" for every proposed answer
-- (a corrected question then joins that entry instead of becoming a twin of it).
CREATE INDEX idx_kb_live_answer ON knowledge_base_rag (shop_id, md5(answer)) WHERE valid_to IS NULL;
